"""The routing queue's tasks: route (embed the prompt, pick a tier, hand the job on) and embed
(`POST /v1/embeddings`: vectors from the same embedder, no job)."""
from __future__ import annotations

import time
from typing import Optional

from celery import shared_task

from jobs.queues import EMBED_TASK, TIERS
from jobs.status import JobStatus
from routing.router import decision_without_embedding
from tasks.context import worker_context
from tasks.delivery import JobTask, fence, hand_over, start_stage
from tasks.escalation import arm
from tasks.fallback import with_live_tier


@shared_task(bind=True, base=JobTask, name="tasks.routing.route")
def route(self, job: dict) -> Optional[dict]:
    """Decide the tier and replace this task by the tier's generation task (same job id),
    unless the semantic cache already holds the answer: then that is the job's result."""
    context = worker_context()
    store = context.store
    if not start_stage(self, JobStatus.ROUTING, routing_started_at=time.time()):
        return None  # cancelled meanwhile, or a duplicate of a delivery that routed the job already
    # The web app sends such a job straight to its tier; this serves other publishers.
    decision, embedding = decision_without_embedding(job, context.settings.semantic_cache_max_entries), None
    if decision is None:
        forced = job["tier"] if job.get("tier") in TIERS else None
        decision, embedding = context.router().route(job["prompt"], forced_tier=forced)
    routing = with_live_tier(context.settings, store.redis, decision.as_dict())
    routing = arm(context.settings, job, routing)  # `escalate`: whether a weak small answer moves to large
    if not store.move(self.request.id, JobStatus.QUEUED, fence=fence(self), routing=routing, routed_at=time.time()):
        return None
    cached = context.semantic_cache.answer(self.request.id, job, routing, embedding, fence(self))
    if cached is not None:
        context.meter.record(job.get("key_id"), cache_hits=1)
        return cached
    if store.delivery(self.request.id) != fence(self):
        return None  # a later delivery routes the job: it hands it on, not this one
    hand_over(self, job, routing)


@shared_task(name=EMBED_TASK)
def embed(texts: list[str]) -> dict:
    """Unit-length vectors for `texts` (one row each, in order), the tokens the model read and its id.

    The router's model encodes them, in its float form (EMBEDDING_BACKEND); concurrent calls merge into
    batches, the router's own when EMBEDDING_BACKEND and ROUTING_EMBEDDING_BACKEND agree. No job record
    is read or written.
    """
    context = worker_context()
    limit = context.settings.embedding_max_inputs
    # The web app validated the request; this guards against other publishers (one definition: the settings).
    if not isinstance(texts, list) or not 1 <= len(texts) <= limit or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"texts must be a list of 1 to {limit} strings")
    embedder = context.embedder()
    vectors = embedder.encode(texts)
    return {"data": vectors.tolist(), "prompt_tokens": embedder.count_tokens(texts),
            "model": context.settings.embedding_model_id()}
