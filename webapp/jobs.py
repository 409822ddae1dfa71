"""The jobs API: submit and poll (`/v1/jobs`), or submit and wait (`/generate`)."""
from __future__ import annotations

import re

from flask import Blueprint, jsonify, request, url_for
from marshmallow import Schema

from jobs import control
from tenants.audit import record_audit
from tenants.meter import NO_KEY
from webapp.apikeys import caller_id, may_see
from webapp.context import web
from webapp.errors import APIError
from webapp.schemas import JobRequestSchema
from webapp.submission import job_view, submit_job, wait_for_job

bp = Blueprint("jobs", __name__)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
SYNC_FIELDS = ("response", "model_used", "latency_ms", "intent", "score", "cached", "similarity", "tier", "tokens",
               "routing")


def load_json_body(schema: Schema) -> dict:
    """The request's JSON object body, validated by `schema`."""
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the JSON parser recurses per level: a body nested ~1000 deep ends it
        raise APIError(400, "invalid_request", "the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise APIError(400, "invalid_request", "the body must be a JSON object")
    return schema.load(body)


def finished_result(job_id: str) -> dict:
    """Wait for the job; its result, or a 504 (still running) or 502 (it did not succeed)."""
    done = wait_for_job(job_id, web().settings.wait_timeout_s)
    if done is None:
        raise APIError(504, "timeout", "the job is still running; poll it", id=job_id,
                       location=url_for("jobs.get_job", job_id=job_id))
    if done["status"] != "succeeded":
        raise APIError(502, "job_failed", f"the job ended as {done['status']}", id=job_id, detail=done.get("error"))
    return done["result"]


def with_cache_control(job: dict) -> dict:
    """`Cache-Control: no-cache` skips cached answers, as `"cache": false` does (every route that generates)."""
    return {**job, "cache": False} if request.cache_control.no_cache else job


def _job_request() -> dict:
    return with_cache_control(load_json_body(web().schema(JobRequestSchema)))


@bp.post("/v1/jobs")
def create_job():
    record = submit_job(_job_request())
    response = jsonify({**job_view(record), "links": {"self": url_for("jobs.get_job", job_id=record["id"])}})
    response.status_code = 200 if record["status"] == "succeeded" else 202  # 200: answered from the cache
    response.headers["Location"] = url_for("jobs.get_job", job_id=record["id"])
    return response


def existing_job(job_id: str) -> dict:
    """The job's record, or a 404: also for a job another key created (its existence stays hidden)."""
    record = web().store.get(job_id) if JOB_ID.match(job_id) else None
    if record is None or not may_see(record):
        raise APIError(404, "not_found", f"no job {job_id}")
    return record


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(job_view(existing_job(job_id)))


@bp.delete("/v1/jobs/<job_id>")
def cancel_job(job_id: str):
    """Cancel a job: a queued one never runs, a running one stops within one decode step."""
    before = existing_job(job_id)
    record = control.cancel_job(web().store, before)
    if record["status"] != "cancelled":
        raise APIError(409, "conflict", f"job {job_id} already {record['status']}", job_status=record["status"])
    if before["status"] != "cancelled":
        record_audit(web().store.redis, caller_id() or NO_KEY, "job_cancelled", job_id,
                     {"owner": (before.get("request") or {}).get("key_id")})
    return jsonify(job_view(record))


@bp.post("/generate")
def generate():
    record = submit_job({**_job_request(), "stream": False})  # waited for whole: no token events
    result = finished_result(record["id"])  # at once when the exact cache answered
    return jsonify({"id": record["id"], **{k: result[k] for k in SYNC_FIELDS if k in result}})
