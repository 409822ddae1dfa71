"""Which queues have a live worker right now: each worker beats into one Redis sorted set per queue.

A beat lists the queues the worker consumes at that moment (so `cancel_consumer` counts), a clean
shutdown leaves at once, and a killed worker drops out once its last beat is `stale_after_s()` old.
"""
from __future__ import annotations

import os
import time

import redis


def heartbeat_s() -> float:
    return float(os.environ.get("WORKER_HEARTBEAT_S", "2"))


def stale_after_s() -> float:
    return 3 * heartbeat_s()


def _key(queue: str) -> str:
    return f"workers:live:{queue}"


def beat(client: redis.Redis, worker: str, queues: set[str], previous: set[str]) -> None:
    """Record that `worker` consumes `queues` now, and no longer the rest of `previous`."""
    pipe = client.pipeline()
    now = time.time()
    for queue in queues:
        pipe.zadd(_key(queue), {worker: now})
        pipe.zremrangebyscore(_key(queue), "-inf", now - 100 * heartbeat_s())  # long-dead workers
    for queue in previous - queues:
        pipe.zrem(_key(queue), worker)
    pipe.execute()


def leave(client: redis.Redis, worker: str, queues: set[str]) -> None:
    pipe = client.pipeline()
    for queue in queues:
        pipe.zrem(_key(queue), worker)
    pipe.execute()


def live_workers(client: redis.Redis, queue: str) -> set[str]:
    """The workers that beat for `queue` recently."""
    return {name.decode() for name in client.zrangebyscore(_key(queue), time.time() - stale_after_s(), "+inf")}
