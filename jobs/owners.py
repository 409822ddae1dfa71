"""Jobs in flight per owner (the API key that created them), for per-key caps: a Redis set of job ids
per owner, pruned of ended jobs when it is counted."""
from __future__ import annotations

from redis.client import Pipeline

from jobs.status import is_final
from jobs.store import JobStore, job_key


def _key(owner: str) -> str:
    return f"jobs:in-flight:{owner}"


def track_in_flight(store: JobStore, owner: str, job_id: str, pipe: Pipeline) -> None:
    """Count the job as in flight for `owner` (in `pipe`, with the job's record)."""
    pipe.sadd(_key(owner), job_id)
    pipe.expire(_key(owner), store.ttl_s)


def in_flight(store: JobStore, owner: str) -> int:
    """How many of `owner`'s jobs have not ended."""
    return len(in_flight_ids(store, owner))


def in_flight_ids(store: JobStore, owner: str) -> list[str]:
    """The ids of `owner`'s jobs that have not ended; ended or expired ones leave the set here."""
    job_ids = [member.decode() for member in store.redis.smembers(_key(owner))]
    if not job_ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(job_key(job_id), "status")
    statuses = dict(zip(job_ids, pipe.execute()))
    ended = [job_id for job_id, status in statuses.items() if status is None or is_final(status.decode())]
    if ended:
        store.redis.srem(_key(owner), *ended)
    return [job_id for job_id in job_ids if job_id not in ended]
