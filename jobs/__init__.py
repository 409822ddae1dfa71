"""The job model: statuses and their guarded transitions, records, token streams, cancel flags,
worker presence, the recent-jobs list and the queues. It knows neither Flask nor Celery: the web
app and the workers both write jobs through `jobs.store.JobStore`.
"""
from __future__ import annotations

from typing import Any

import redis

from jobs.sentinel import is_sentinel, sentinel_client

MAX_CONNECTIONS = 100  # per process: the web's streams share one stream hub, not a connection each
POOL_WAIT_S = 5.0  # a burst of requests waits this long for a free connection rather than failing


def settings_client(settings: Any, timeout_s: float) -> redis.Redis:
    """The job store's client for the settings' REDIS_URL (and REDIS_SENTINEL_MASTER), giving up after
    `timeout_s`. (`settings` is settings.Settings, not imported: this package builds on Redis alone.)"""
    return redis_client(settings.redis_url, timeout_s, settings.redis_sentinel_master)


def redis_client(url: str, timeout_s: float, sentinel_master: str = "") -> redis.Redis:
    """A client for the job store on `url` that gives up after `timeout_s` (connect and read); with a
    `sentinel://` URL, a client of the master the sentinels name `sentinel_master` (jobs.sentinel).

    Its pool blocks when all its connections are busy: redis-py's default pool raises on the 101st
    concurrent user, which a burst of gevent requests reaches at once.
    """
    if is_sentinel(url):
        return sentinel_client(url, sentinel_master, timeout_s, MAX_CONNECTIONS, max(timeout_s, POOL_WAIT_S))
    pool = redis.BlockingConnectionPool.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                                 max_connections=MAX_CONNECTIONS, timeout=max(timeout_s, POOL_WAIT_S))
    return redis.Redis(connection_pool=pool)
