"""The jobs API: submit and poll (`/v1/jobs`), or submit and wait (`/generate`)."""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request, url_for

from tasks.jobs import job_store
from webapp.errors import APIError
from webapp.schemas import JobRequestSchema
from webapp.submission import job_view, submit_job, wait_for_job

bp = Blueprint("jobs", __name__)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
SYNC_FIELDS = ("response", "model_used", "latency_ms", "intent", "score", "cached", "similarity", "tier", "tokens",
               "routing")


def _job_request() -> dict:
    if not request.is_json:
        raise APIError(415, "unsupported_media_type", "send the body as application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise APIError(400, "invalid_request", "the body must be a JSON object")
    job = JobRequestSchema().load(body)
    if request.cache_control.no_cache:
        job["cache"] = False
    return job


@bp.post("/v1/jobs")
def create_job():
    record = submit_job(_job_request())
    response = jsonify({**job_view(record), "links": {"self": url_for("jobs.get_job", job_id=record["id"])}})
    response.status_code = 200 if record["status"] == "succeeded" else 202  # 200: answered from the cache
    response.headers["Location"] = url_for("jobs.get_job", job_id=record["id"])
    return response


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str):
    record = job_store().get(job_id) if JOB_ID.match(job_id) else None
    if record is None:
        raise APIError(404, "not_found", f"no job {job_id}")
    return jsonify(job_view(record))


@bp.post("/generate")
def generate():
    record = submit_job(_job_request())
    answered = record["status"] == "succeeded"  # by the exact cache
    done = record if answered else wait_for_job(record["id"], current_app.config["WAIT_TIMEOUT_S"])
    if done is None:
        raise APIError(504, "timeout", "the job is still running; poll it", id=record["id"],
                       location=url_for("jobs.get_job", job_id=record["id"]))
    if done["status"] != "succeeded":
        raise APIError(502, "job_failed", f"the job ended as {done['status']}", id=record["id"],
                       detail=done.get("error"))
    result = done["result"]
    return jsonify({"id": record["id"], **{k: result[k] for k in SYNC_FIELDS if k in result}})
