"""`GET /v1/jobs`: the recently submitted jobs, newest first, with their status."""
from __future__ import annotations

from flask import Blueprint, jsonify, request
from marshmallow import EXCLUDE, Schema, fields, validate

from jobs.recent import PROMPT_PREVIEW_CHARS, recent_jobs
from webapp.apikeys import caller_owner
from webapp.context import web
from webapp.submission import job_view

bp = Blueprint("recent", __name__)


class RecentJobsQuery(Schema):
    """Query string of `GET /v1/jobs`."""

    class Meta:
        unknown = EXCLUDE  # browsers and tools add their own parameters (cache busters)

    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))


def _summary(record: dict) -> dict:
    prompt = (record.get("request") or {}).get("prompt", "")
    return {**job_view(record), "prompt": prompt[:PROMPT_PREVIEW_CHARS]}


@bp.get("/v1/jobs")
def list_recent_jobs():
    limit = RecentJobsQuery().load(request.args)["limit"]
    records = recent_jobs(web().store, limit, owner=caller_owner())
    return jsonify({"jobs": [_summary(record) for record in records]})
