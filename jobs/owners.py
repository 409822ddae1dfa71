"""Jobs in flight per owner (the API key that created them), for per-key caps and fair shares: a Redis
sorted set of job ids per owner, scored by when each was counted, pruned of ended jobs when counted.

A job is counted (reserved) before its record exists, so a missing record means "ended" (expired
or deleted) only once the reservation is older than `RESERVATION_GRACE_S`.
"""
from __future__ import annotations

import functools
import time
from typing import Optional

import redis

from jobs.status import is_final
from jobs.store import JobStore, job_key

RESERVATION_GRACE_S = 30.0

# Add the job and count, in one step: submissions racing each other cannot all see room under the cap.
_RESERVE = """
redis.call('zadd', KEYS[1], ARGV[4], ARGV[1])
redis.call('expire', KEYS[1], ARGV[3])
local count = redis.call('zcard', KEYS[1])
if tonumber(ARGV[2]) > 0 and count > tonumber(ARGV[2]) then
  redis.call('zrem', KEYS[1], ARGV[1])
  return -1
end
return count - 1
"""


@functools.lru_cache(maxsize=8)
def _reserve_script(client: redis.Redis):
    """The reservation script, sent to Redis once and then run by its digest (EVALSHA)."""
    return client.register_script(_RESERVE)


def _key(owner: str) -> str:
    return f"jobs:owner-in-flight:{owner}"


def reserve_in_flight(store: JobStore, owner: str, job_id: str, cap: Optional[int]) -> Optional[int]:
    """Count the job among `owner`'s jobs in flight unless that would pass `cap` (None: no cap).

    Returns how many were in flight before it, or None when the cap is reached (nothing counted).
    Call `in_flight` first: it takes the ended jobs out of the count.
    """
    before = _reserve_script(store.redis)(keys=[_key(owner)], args=[job_id, cap or 0, store.ttl_s, time.time()])
    return None if before < 0 else int(before)


def release_in_flight(store: JobStore, owner: str, job_id: str) -> None:
    """Take back a reservation whose job was never queued."""
    store.redis.zrem(_key(owner), job_id)


def in_flight(store: JobStore, owner: str) -> int:
    """How many of `owner`'s jobs have not ended."""
    return len(in_flight_ids(store, owner))


def in_flight_ids(store: JobStore, owner: str) -> list[str]:
    """The ids of `owner`'s jobs that have not ended; ended or expired ones leave the set here."""
    counted = [(member.decode(), at) for member, at in store.redis.zrange(_key(owner), 0, -1, withscores=True)]
    if not counted:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for job_id, _ in counted:
        pipe.hget(job_key(job_id), "status")
    fresh_after = time.time() - RESERVATION_GRACE_S
    ended = [job_id for (job_id, at), status in zip(counted, pipe.execute())
             if (status is None and at < fresh_after) or (status is not None and is_final(status.decode()))]
    if ended:
        store.redis.zrem(_key(owner), *ended)
    return [job_id for job_id, _ in counted if job_id not in ended]
