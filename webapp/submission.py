"""Submitting jobs to the routing queue and waiting for them; shared by every endpoint."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Optional

from flask import g

from cache.entries import cached_result, finished_fields
from jobs.recent import remember_job
from jobs.status import is_final
from jobs.streams import follow_job
from webapp.backpressure import ensure_capacity
from webapp.context import WebContext, web


def submit_job(job: dict) -> dict:
    """Record the job and queue its routing task; the job id is the Celery task id throughout.

    An exact cache hit is answered here: the record comes back already succeeded, nothing queued.
    """
    context, job_id = web(), uuid.uuid4().hex
    if g.get("api_key"):
        job = {**job, "key_id": g.api_key["id"]}  # callers with different keys never share cached answers
    cached = context.exact_cache.lookup(job)
    if cached is not None:
        now = time.time()
        return _record(context, job_id, job, **finished_fields(cached_result(cached, "exact", now, now), now))
    ensure_capacity(context, job)
    record = _record(context, job_id, job)
    try:
        context.broker.submit(job_id, job)
    except Exception:
        context.store.delete(job_id)
        raise
    return record


def _record(context: WebContext, job_id: str, job: dict, **fields) -> dict:
    """Create the job record and list it among the recent jobs, in one round trip to Redis."""
    pipe = context.store.redis.pipeline()
    record = context.store.create(job_id, job, pipe=pipe, **fields)
    remember_job(context.store, job_id, context.settings.recent_jobs_max, pipe)
    pipe.execute()
    return record


def wait_for_job(job_id: str, timeout_s: float, poll_s: float = 0.05) -> Optional[dict]:
    """Block until the job ends or the timeout passes; return its record, or None on timeout.

    It follows the job's token stream, so it wakes on the `final` event (written with the finished
    record) rather than at the next poll; a job that ends without one (a cache hit, a failure, a
    cancel) is seen in the record within `poll_s`. Every blocking read is shorter than the Redis
    socket timeout, so a Redis that dies or hangs mid-wait is an error at once and the caller gets its 503.
    """
    store = web().store
    record = store.get(job_id)
    if record is None or is_final(record["status"]):
        return record
    for event in follow_job(store, job_id, timeout_s=timeout_s, heartbeat_s=timeout_s, poll_s=poll_s):
        if event.event in ("final", "timeout"):
            break
    record = store.get(job_id)
    return record if record is None or is_final(record["status"]) else None


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_view(record: dict) -> dict:
    """The public shape of a job record."""
    view = {"id": record["id"], "status": record["status"], "created_at": iso(record["created_at"])}
    if "routing" in record:
        view["routing"] = record["routing"]
        view["tier"] = record["routing"]["tier"]
    if record["status"] == "generating" and "tokens_so_far" in record:
        view["tokens_so_far"] = int(record["tokens_so_far"])
    if "finished_at" in record:
        view["finished_at"] = iso(record["finished_at"])
    for field in ("result", "error"):
        if field in record:
            view[field] = record[field]
    return view
