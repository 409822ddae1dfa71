"""`POST /v1/jobs/<id>/feedback`: rate a finished job's answer (and name the tier that should have answered).

Scoped as `GET /v1/jobs/<id>` is (another key's job is a 404), for succeeded jobs only (409 otherwise).
One feedback per job: a second one replaces the first (201 the first time, 200 after). Kept in SQL with
the prompt and the routing decision (tenants.feedback), which `python -m routing.calibrate --feedback`
learns from.
"""
from __future__ import annotations

import json
from typing import Optional

from flask import Blueprint, jsonify

from jobs.recent import PROMPT_PREVIEW_CHARS
from jobs.store import job_key
from tenants.feedback import FeedbackStore, routing_fields
from tenants.meter import NO_KEY
from webapp.context import web
from webapp.errors import APIError
from webapp.jobs import existing_job, load_json_body
from webapp.schemas import FeedbackRequestSchema

bp = Blueprint("feedback", __name__)
FIELDS = ("job_id", "rating", "tier_wanted", "comment", "routed_tier", "routed_intent", "routed_score", "routed_rule",
          "answered_tier", "created_at", "updated_at")


def feedback_store() -> FeedbackStore:
    return FeedbackStore(web().tenants.ledger.engine)


@bp.post("/v1/jobs/<job_id>/feedback")
def give_feedback(job_id: str):
    body = load_json_body(FeedbackRequestSchema())
    record = existing_job(job_id)
    if record["status"] != "succeeded":
        raise APIError(409, "conflict", f"job {job_id} is {record['status']}: only a succeeded job can get feedback",
                       job_status=record["status"])
    request_ = record.get("request") or {}
    prompt = _full_prompt(job_id, request_)
    if prompt is None:
        raise APIError(409, "conflict", f"job {job_id} no longer holds its prompt (its cached answer expired); "
                       "feedback needs it", job_status=record["status"])
    row, replaced = feedback_store().save(job_id, request_.get("key_id") or NO_KEY, prompt, body["rating"],
                                          routing_fields(record), body.get("tier"), body.get("comment"))
    response = jsonify({**{field: row[field] for field in FIELDS}, "replaced": replaced})
    response.status_code = 200 if replaced else 201
    return response


def _full_prompt(job_id: str, request_: dict) -> Optional[str]:
    """The prompt the router saw. An exact cache hit's record keeps only its start (and a pointer to the
    cache entry, which has the whole prompt); None once that entry expired."""
    prompt = request_.get("prompt")
    if request_.get("cached") != "exact":
        return prompt if isinstance(prompt, str) else None
    redis = web().store.redis
    reference = redis.hget(job_key(job_id), "result_ref")
    entry = redis.get(json.loads(reference)["key"]) if reference else None
    full = json.loads(entry).get("prompt") if entry else None
    if isinstance(full, str):
        return full
    # Shorter than the preview's length: the preview is the whole prompt.
    return prompt if isinstance(prompt, str) and len(prompt) < PROMPT_PREVIEW_CHARS else None
