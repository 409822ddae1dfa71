"""Recently submitted jobs: a bounded Redis list of job ids, newest first."""
from __future__ import annotations

from typing import Optional

from redis.client import Pipeline

from jobs.store import JobStore

RECENT_KEY = "jobs:recent"


def remember_job(store: JobStore, job_id: str, keep: int, pipe: Optional[Pipeline] = None) -> None:
    """Put the job at the head of the list and keep the newest `keep` (in `pipe`, when given)."""
    target = store.redis.pipeline(transaction=False) if pipe is None else pipe
    target.lpush(RECENT_KEY, job_id)
    target.ltrim(RECENT_KEY, 0, keep - 1)
    if pipe is None:
        target.execute()


def recent_jobs(store: JobStore, limit: int) -> list[dict]:
    """The newest `limit` job records still held (expired ones are skipped)."""
    ids = store.redis.lrange(RECENT_KEY, 0, limit - 1)
    records = (store.get(job_id.decode()) for job_id in ids)
    return [record for record in records if record is not None]
