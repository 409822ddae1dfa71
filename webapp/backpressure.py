"""Backpressure: refuse a job (429 + Retry-After) while a queue it would enter is past its depth limit."""
from __future__ import annotations

import os

import redis

from tasks.fallback import tier_queue
from webapp.errors import APIError

QUEUES = ("routing", "small-queue", "large-queue")
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport keeps priority p>0 of queue q in list q + SEP + p


def queue_limits_from_env() -> dict[str, int]:
    """`QUEUE_MAX_DEPTH` for every queue, overridden per queue by e.g. `SMALL_QUEUE_MAX_DEPTH`."""
    default = int(os.environ.get("QUEUE_MAX_DEPTH", "100"))
    return {q: int(os.environ.get(f"{q.upper().replace('-', '_')}_MAX_DEPTH", default)) for q in QUEUES}


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in `queue` over all its priority lists (not those a worker already holds)."""
    pipe = client.pipeline()
    for key in [queue] + [f"{queue}{PRIORITY_SEP}{p}" for p in range(1, 10)]:
        pipe.llen(key)
    return sum(pipe.execute())


def queues_for(job: dict) -> list[str]:
    """The queues a job passes through: routing, then its forced tier's queue or either tier's."""
    tiers = [job["tier"]] if job.get("tier") in ("small", "large") else ["small", "large"]
    return ["routing"] + [tier_queue(tier) for tier in tiers]


def ensure_capacity(client: redis.Redis, job: dict, limits: dict[str, int], retry_after_s: int) -> None:
    """Raise a 429 when any queue the job may enter is full, before anything is recorded or queued.

    Concurrent submissions can pass the check together, so a queue may overshoot its limit by the
    number of requests the web app serves at once.
    """
    for queue in queues_for(job):
        depth, limit = queue_depth(client, queue), limits.get(queue)
        if limit is not None and depth >= limit:
            raise APIError(429, "queue_full", f"queue {queue} holds {depth} jobs, its limit; retry later",
                           headers={"Retry-After": str(retry_after_s)}, queue=queue)
