"""Job records in Redis: what was asked, where it is, and what came out."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import redis

JSON_FIELDS = ("request", "routing", "result", "error")
STATUSES = ("queued", "routing", "generating", "succeeded", "failed", "cancelled")


def job_ttl_s() -> int:
    return int(os.environ.get("JOB_TTL_S", "86400"))


def _key(job_id: str) -> str:
    return f"job:{job_id}"


class JobStore:
    """A job is one Redis hash, `job:<id>`, expiring with the job TTL."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, job_id: str, request: dict, **fields: Any) -> dict:
        """A new record; `fields` may set more (a job answered from the cache is born finished)."""
        record = {"id": job_id, "status": "queued", "created_at": time.time(), "request": request, **fields}
        self.update(job_id, **record)
        return record

    def update(self, job_id: str, **fields: Any) -> None:
        encoded = {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in fields.items() if v is not None}
        pipe = self.redis.pipeline()
        pipe.hset(_key(job_id), mapping=encoded)
        pipe.expire(_key(job_id), job_ttl_s())
        pipe.execute()

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


_store: Optional[JobStore] = None


def job_store() -> JobStore:
    """The process-wide store, on the broker's Redis."""
    global _store
    if _store is None:
        from celeryconfig import broker_url

        _store = JobStore(redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=2))
    return _store
