"""Which queues have a live worker right now: each worker beats into one Redis sorted set per queue.

A beat lists the queues the worker consumes at that moment (so `cancel_consumer` counts) and whose
engine is stepping (a stalled engine's queue is left out), a clean shutdown leaves at once, and a
killed worker drops out once its last beat is three beats old.
"""
from __future__ import annotations

import time
from typing import Iterable

import redis

STALE_AFTER_BEATS = 3


def _key(queue: str) -> str:
    return f"workers:live:{queue}"


def beat(client: redis.Redis, worker: str, queues: set[str], previous: set[str], heartbeat_s: float) -> None:
    """Record that `worker` consumes `queues` now, and no longer the rest of `previous`."""
    pipe = client.pipeline()
    now = time.time()
    for queue in queues:
        pipe.zadd(_key(queue), {worker: now})
        pipe.zremrangebyscore(_key(queue), "-inf", now - 100 * heartbeat_s)  # long-dead workers
    for queue in previous - queues:
        pipe.zrem(_key(queue), worker)
    pipe.execute()


def leave(client: redis.Redis, worker: str, queues: set[str]) -> None:
    pipe = client.pipeline()
    for queue in queues:
        pipe.zrem(_key(queue), worker)
    pipe.execute()


def live_workers(client: redis.Redis, queue: str, heartbeat_s: float) -> set[str]:
    """The workers that beat for `queue` within the last three beats."""
    since = time.time() - STALE_AFTER_BEATS * heartbeat_s
    return {name.decode() for name in client.zrangebyscore(_key(queue), since, "+inf")}


def live_by_host(client: redis.Redis, queues: Iterable[str], heartbeat_s: float) -> dict[str, dict[str, list[str]]]:
    """Each queue's live workers grouped by host (the part of `name@host` after the @), in one round trip."""
    since = time.time() - STALE_AFTER_BEATS * heartbeat_s
    queues = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrangebyscore(_key(queue), since, "+inf")
    grouped: dict[str, dict[str, list[str]]] = {}
    for queue, names in zip(queues, pipe.execute()):
        hosts = grouped.setdefault(queue, {})
        for name in sorted(raw.decode() for raw in names):
            hosts.setdefault(name.rpartition("@")[2] or name, []).append(name)
    return grouped


def live_counts(client: redis.Redis, queues: Iterable[str], heartbeat_s: float) -> dict[str, int]:
    """How many live workers each queue has, in one round trip."""
    since = time.time() - STALE_AFTER_BEATS * heartbeat_s
    queues = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zcount(_key(queue), since, "+inf")
    return dict(zip(queues, pipe.execute()))
