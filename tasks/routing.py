"""The routing task (queue `routing`): embed the prompt, pick a tier, hand the job on."""
from __future__ import annotations

import time
from typing import Optional

from celery import shared_task

from jobs.queues import TIERS, generation_task, job_priority
from jobs.status import JobStatus
from tasks.context import worker_context
from tasks.delivery import JobTask
from tasks.fallback import with_live_tier


@shared_task(bind=True, base=JobTask, name="tasks.routing.route")
def route(self, job: dict) -> Optional[dict]:
    """Decide the tier and replace this task by the tier's generation task (same job id),
    unless the semantic cache already holds the answer: then that is the job's result."""
    context = worker_context()
    store = context.store
    if not store.move(self.request.id, JobStatus.ROUTING, routing_started_at=time.time()):
        return None  # cancelled meanwhile
    forced = job["tier"] if job.get("tier") in TIERS else None
    decision, embedding = context.router().route(job["prompt"], forced_tier=forced)
    routing = with_live_tier(context.settings, store.redis, decision.as_dict())
    if not store.move(self.request.id, JobStatus.QUEUED, routing=routing, routed_at=time.time()):
        return None
    cached = context.semantic_cache.answer(self.request.id, job, routing, embedding)
    if cached is not None:
        context.meter.record(job.get("key_id"), cache_hits=1)
        return cached
    target = self.app.tasks[generation_task(routing["tier"])]
    raise self.replace(target.s(job, routing).set(priority=job_priority(job)))
