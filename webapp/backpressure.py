"""Backpressure: refuse a job (429 + Retry-After) while a queue it would enter is past its depth limit."""
from __future__ import annotations

from jobs.queues import queues_for
from webapp.context import WebContext
from webapp.errors import APIError


def ensure_capacity(context: WebContext, job: dict) -> None:
    """Raise a 429 when any queue the job may enter is full, before anything is recorded or queued.

    Concurrent submissions can pass the check together, so a queue may overshoot its limit by the
    number of requests the web app serves at once.
    """
    queues = queues_for(job)
    limits, depths = context.settings.queue_limits(), context.broker.queue_depths(context.store, queues)
    for queue in queues:
        depth, limit = depths[queue], limits.get(queue)
        if limit is not None and depth >= limit:
            raise APIError(429, "queue_full", f"queue {queue} holds {depth} jobs, its limit; retry later",
                           headers={"Retry-After": str(context.settings.queue_retry_after_s)}, queue=queue)
