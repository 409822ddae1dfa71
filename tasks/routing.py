"""The routing task (queue `routing`): embed the prompt, pick a tier, hand the job on."""
from __future__ import annotations

import threading
import time
from typing import Optional

from celery import shared_task

from cache.semantic import semantic_cache
from routing.embedder import Embedder
from routing.intents import load_route_table
from routing.router import Router
from tasks.jobs import job_store

_router: Router | None = None
_router_lock = threading.Lock()


def get_router() -> Router:
    """The process's router, built on first use so the embedding model loads after any fork."""
    global _router
    with _router_lock:
        if _router is None:
            _router = Router(load_route_table(), Embedder().encode)
        return _router


@shared_task(bind=True, name="tasks.routing.route")
def route(self, job: dict) -> Optional[dict]:
    """Decide the tier and replace this task by the tier's generation task (same job id),
    unless the semantic cache already holds the answer: then that is the job's result."""
    from tasks import large, small

    store = job_store()
    store.update(self.request.id, status="routing", routing_started_at=time.time())
    forced = job["tier"] if job.get("tier") in ("small", "large") else None
    decision, embedding = get_router().route(job["prompt"], forced_tier=forced)
    store.update(self.request.id, status="queued", routing=decision.as_dict(), routed_at=time.time())
    cached = semantic_cache().answer(self.request.id, job, decision.as_dict(), embedding)
    if cached is not None:
        return cached
    target = small.generate if decision.tier == "small" else large.generate
    raise self.replace(target.s(job, decision.as_dict()))
