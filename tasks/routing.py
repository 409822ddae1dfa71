"""The routing task (queue `routing`): embed the prompt, pick a tier, hand the job on."""
from __future__ import annotations

import threading
import time

from celery import shared_task

from routing.embedder import Embedder
from routing.live import LiveRouter
from routing.router import Router
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


@shared_task(bind=True, name="tasks.routing.route")
def route(self, job: dict) -> None:
    """Decide the tier and replace this task by the tier's generation task (same job id)."""
    from tasks import large, small

    store = job_store()
    store.update(self.request.id, status="routing", routing_started_at=time.time())
    forced = job["tier"] if job.get("tier") in ("small", "large") else None
    decision, _ = get_router().route(job["prompt"], forced_tier=forced)
    store.update(self.request.id, status="queued", routing=decision.as_dict(), routed_at=time.time())
    target = small.generate if decision.tier == "small" else large.generate
    raise self.replace(target.s(job, decision.as_dict()))
