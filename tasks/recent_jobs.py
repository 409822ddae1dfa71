"""Recently submitted jobs: a bounded Redis list of job ids, newest first."""
from __future__ import annotations

import os
from typing import Optional

from redis.client import Pipeline

from tasks.jobs import job_store

RECENT_KEY = "jobs:recent"


def recent_jobs_max() -> int:
    return int(os.environ.get("RECENT_JOBS_MAX", "100"))


def remember_job(job_id: str, pipe: Optional[Pipeline] = None) -> None:
    """Put the job at the head of the list and drop the oldest beyond the cap (in `pipe`, when given)."""
    target = job_store().redis.pipeline(transaction=False) if pipe is None else pipe
    target.lpush(RECENT_KEY, job_id)
    target.ltrim(RECENT_KEY, 0, recent_jobs_max() - 1)
    if pipe is None:
        target.execute()


def recent_jobs(limit: int) -> list[dict]:
    """The newest `limit` job records still held (expired ones are skipped)."""
    store = job_store()
    ids = store.redis.lrange(RECENT_KEY, 0, limit - 1)
    records = (store.get(job_id.decode()) for job_id in ids)
    return [record for record in records if record is not None]
