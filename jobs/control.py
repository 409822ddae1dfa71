"""Stopping a job from outside: a cancel flag in Redis that whichever worker holds the job watches."""
from __future__ import annotations

import time

from jobs.status import JobStatus, is_final
from jobs.store import JobStore


def cancel_key(job_id: str) -> str:
    return f"job:{job_id}:cancel"


def request_cancel(store: JobStore, job_id: str) -> None:
    """Raise the job's cancel flag; whichever worker holds the job sees it."""
    store.redis.set(cancel_key(job_id), 1, ex=store.ttl_s)


def cancel_requested(store: JobStore, job_id: str) -> bool:
    return bool(store.redis.exists(cancel_key(job_id)))


def cancel_job(store: JobStore, record: dict) -> dict:
    """Cancel the job of `record` if it has not ended: a queued one never runs, a running one stops
    within one decode step. Returns the record as it is afterwards."""
    if not is_final(record["status"]):
        request_cancel(store, record["id"])
        store.move(record["id"], JobStatus.CANCELLED, finished_at=time.time())
        record = store.get(record["id"]) or record
    return record
