"""The routing task (queue `routing`): embed the prompt, pick a tier, hand the job on."""
from __future__ import annotations

import threading
import time
from typing import Optional

from celery import shared_task

from cache.semantic import semantic_cache
from routing.embedder import Embedder
from routing.live import LiveRouter
from routing.router import Router
from tasks.delivery import JobTask, job_priority
from tasks.fallback import generation_task, with_live_tier
from tasks.jobs import job_store

_live: LiveRouter | None = None
_live_lock = threading.Lock()


def get_router() -> Router:
    """The process's router, built on first use so the embedding model loads after any fork.

    Rebuilt when the routes file (`ROUTES_FILE`) or parameters file (`ROUTING_PARAMS_FILE`)
    changes; an invalid edit keeps the previous router and logs an error.
    """
    global _live
    with _live_lock:
        if _live is None:
            embedder = Embedder()
            embedder.encode(["warm up"])  # load the model now (worker warm-up calls this), not on a job
            _live = LiveRouter(embedder.encode)
    return _live.get()


@shared_task(bind=True, base=JobTask, name="tasks.routing.route")
def route(self, job: dict) -> Optional[dict]:
    """Decide the tier and replace this task by the tier's generation task (same job id),
    unless the semantic cache already holds the answer: then that is the job's result."""
    store = job_store()
    if not store.advance(self.request.id, status="routing", routing_started_at=time.time()):
        return None  # cancelled meanwhile
    forced = job["tier"] if job.get("tier") in ("small", "large") else None
    decision, embedding = get_router().route(job["prompt"], forced_tier=forced)
    routing = with_live_tier(store.redis, decision.as_dict())
    if not store.advance(self.request.id, status="queued", routing=routing, routed_at=time.time()):
        return None
    cached = semantic_cache().answer(self.request.id, job, routing, embedding)
    if cached is not None:
        return cached
    target = generation_task(self.app, routing["tier"])
    raise self.replace(target.s(job, routing).set(priority=job_priority(job)))
