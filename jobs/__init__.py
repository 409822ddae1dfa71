"""The job model: statuses and their guarded transitions, records, token streams, cancel flags,
worker presence, the recent-jobs list and the queues. It knows neither Flask nor Celery: the web
app and the workers both write jobs through `jobs.store.JobStore`.
"""
from __future__ import annotations

import redis


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client for the job store on `url` that gives up after `timeout_s` (connect and read)."""
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
