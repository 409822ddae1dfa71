"""Submitting jobs to the routing queue and waiting for them; shared by every endpoint."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Optional

from celery.exceptions import TimeoutError as CeleryTimeout

from tasks.app import app as celery_app
from tasks.jobs import job_store
from tasks.routing import route

# Publishing must fail fast when Redis is away: the caller gets a 503, not a hang.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


def submit_job(job: dict) -> dict:
    """Record the job and queue its routing task; the job id is the Celery task id throughout."""
    job_id = uuid.uuid4().hex
    store = job_store()
    record = store.create(job_id, job)
    try:
        route.apply_async(args=[job], task_id=job_id, retry_policy=PUBLISH_RETRY)
    except Exception:
        store.delete(job_id)
        raise
    return record


def wait_for_job(job_id: str, timeout_s: float) -> Optional[dict]:
    """Block until the job ends or the timeout passes; return its record, or None on timeout."""
    deadline = time.time() + timeout_s
    result = celery_app.AsyncResult(job_id)
    try:
        result.get(timeout=timeout_s, propagate=False, interval=0.05)
    except CeleryTimeout:
        result.backend.remove_pending_result(result)  # stop listening for a result nobody waits for
        return None
    record = job_store().get(job_id)
    # Celery's Redis backend waits in steps of a second, so a job that ended after the deadline can come back.
    if record and record.get("finished_at", 0) > deadline:
        return None
    return record


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(record: dict) -> dict:
    """The public shape of a job record."""
    view = {"id": record["id"], "status": record["status"], "created_at": iso(record["created_at"])}
    if "routing" in record:
        view["routing"] = record["routing"]
        view["tier"] = record["routing"]["tier"]
    if "finished_at" in record:
        view["finished_at"] = iso(record["finished_at"])
    for field in ("result", "error"):
        if field in record:
            view[field] = record[field]
    return view
