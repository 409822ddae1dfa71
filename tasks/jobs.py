"""Job records in Redis: what was asked, where it is, and what came out."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import redis
from redis.client import Pipeline

JSON_FIELDS = ("request", "routing", "result", "error")
STATUSES = ("queued", "routing", "generating", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")

# Apply the fields only while the job exists and has not ended: a cancelled job stays cancelled
# even when its worker finishes or fails a moment later.
_ADVANCE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


def job_ttl_s() -> int:
    return int(os.environ.get("JOB_TTL_S", "86400"))


def _key(job_id: str) -> str:
    return f"job:{job_id}"


class JobStore:
    """A job is one Redis hash, `job:<id>`, expiring with the job TTL."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, job_id: str, request: dict, pipe: Optional[Pipeline] = None, **fields: Any) -> dict:
        """A new record; `fields` may set more (a job answered from the cache is born finished).

        Given `pipe`, the writes join it and happen when the caller executes it.
        """
        record = {"id": job_id, "status": "queued", "created_at": time.time(), "request": request, **fields}
        self.update(job_id, pipe=pipe, **record)
        return record

    def update(self, job_id: str, pipe: Optional[Pipeline] = None, **fields: Any) -> None:
        target = self.redis.pipeline() if pipe is None else pipe
        target.hset(_key(job_id), mapping=_encode(fields))
        target.expire(_key(job_id), job_ttl_s())
        if pipe is None:
            target.execute()

    def advance(self, job_id: str, **fields: Any) -> bool:
        """Update a job that has not ended yet; False (and nothing written) once it has."""
        flat = [part for item in _encode(fields).items() for part in item]
        return bool(self.redis.eval(_ADVANCE, 1, _key(job_id), job_ttl_s(), *flat))

    def count_delivery(self, job_id: str, stage: str) -> int:
        """Count one more delivery of the job to `stage` (a task name) and return the total so far."""
        pipe = self.redis.pipeline()
        pipe.hincrby(f"{_key(job_id)}:deliveries", stage, 1)
        pipe.expire(f"{_key(job_id)}:deliveries", job_ttl_s())
        return pipe.execute()[0]

    def deliveries(self, job_id: str) -> dict[str, int]:
        """How often the job was delivered to each stage."""
        raw = self.redis.hgetall(f"{_key(job_id)}:deliveries")
        return {k.decode(): int(v) for k, v in raw.items()}

    def get(self, job_id: str) -> Optional[dict]:
        raw = self.redis.hgetall(_key(job_id))
        if not raw:
            return None
        record = {k.decode(): v.decode() for k, v in raw.items()}
        for field in JSON_FIELDS:
            if field in record:
                record[field] = json.loads(record[field])
        for field in [f for f in record if f.endswith("_at")]:
            record[field] = float(record[field])
        return record

    def delete(self, job_id: str) -> None:
        self.redis.delete(_key(job_id))


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in fields.items() if v is not None}


_store: Optional[JobStore] = None


def job_store() -> JobStore:
    """The process-wide store, on the broker's Redis (timeouts as configured for this process)."""
    global _store
    if _store is None:
        from tasks.app import app

        conf = app.conf
        _store = JobStore(redis.Redis.from_url(conf.broker_url, socket_timeout=conf.redis_socket_timeout,
                                               socket_connect_timeout=conf.redis_socket_connect_timeout))
    return _store
