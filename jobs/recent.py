"""Recently submitted jobs: bounded Redis lists of job ids, newest first, one of every job and one
per owner (the API key that created them), so that a caller lists only its own."""
from __future__ import annotations

from typing import Optional

from redis.client import Pipeline

from jobs.store import JobStore

RECENT_KEY = "jobs:recent"
PROMPT_PREVIEW_CHARS = 200  # how much of a prompt the recent list shows


def recent_key(owner: Optional[str] = None) -> str:
    """The list of every job (owner None), or of one owner's jobs."""
    return RECENT_KEY if owner is None else f"{RECENT_KEY}:{owner}"


def remember_job(store: JobStore, job_id: str, keep: int, pipe: Optional[Pipeline] = None,
                 owner: Optional[str] = None) -> None:
    """Put the job at the head of the lists (every job's, and its owner's) and keep the newest `keep`
    of each (in `pipe`, when given)."""
    target = store.redis.pipeline(transaction=False) if pipe is None else pipe
    for key in {recent_key(), recent_key(owner)}:
        target.lpush(key, job_id)
        target.ltrim(key, 0, keep - 1)
        target.expire(key, store.ttl_s)
    if pipe is None:
        target.execute()


def recent_jobs(store: JobStore, limit: int, owner: Optional[str] = None) -> list[dict]:
    """The newest `limit` job records still held (expired ones are skipped), of one owner or of all."""
    ids = store.redis.lrange(recent_key(owner), 0, limit - 1)
    records = (store.get(job_id.decode()) for job_id in ids)
    return [record for record in records if record is not None]
