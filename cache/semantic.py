"""The semantic cache: a routed prompt close enough to a cached one reuses its answer.

The routing task already embeds every prompt; the same vector is looked up here, so no
second encoding happens. A hit needs both a cosine similarity at or above the threshold
and the lexical guard's consent (`cache.guard`), which keeps "is X safe" from answering
"is X not safe". Entries are keyed by model, tier, API key and answer settings.
"""
from __future__ import annotations

import time
import uuid
from typing import Optional

import numpy as np

from cache.entries import cached_result, entry_from_result, finished_fields, storable
from cache.events import cache_lookup
from cache.guard import mismatch
from cache.index import BoundedIndex
from cache.keys import lookups_wanted, semantic_namespace, semantically_cacheable, wants_embedding
from cache.vectors import VectorMirror
from jobs.store import JobStore

CANDIDATES = 3  # nearest entries tried in turn: the best may be vetoed by the guard or gone


class SemanticCache:
    """Bounded index of answered prompts with their routing embeddings."""

    def __init__(self, store: JobStore, models: dict[str, str], threshold: float = 0.9, ttl_s: int = 86400,
                 max_entries: int = 10000, prefix: str = "cache:semantic") -> None:
        self.jobs = store
        self.redis = store.redis
        self.models = models
        self.threshold = threshold
        self.index = BoundedIndex(store.redis, prefix, ttl_s, max_entries)
        self.mirror = VectorMirror(self.index)

    def _pending_key(self, job_id: str) -> str:
        return f"{self.index.prefix}:pending:{job_id}"

    def cacheable(self, job: dict) -> bool:
        return semantically_cacheable(job, self.index.max_entries)

    def wants_embedding(self, job: dict) -> bool:
        return wants_embedding(job, self.index.max_entries)

    def answer(self, job_id: str, job: dict, routing: dict, embedding: Optional[np.ndarray],
               fence: Optional[int] = None) -> Optional[dict]:
        """Finish the job from the cache and return its result, or None when it must be generated.

        On a miss the embedding is parked under the job id, so that the generated answer can
        be stored with it (`store`). Without one (`wants_embedding` said no), nothing is parked.
        """
        tier = routing["tier"]
        if not self.cacheable(job):
            cache_lookup.send("semantic", outcome="skip", tier=tier)
            return None
        if lookups_wanted(job):
            hit, rejected = self.lookup(job, tier, embedding)
            cache_lookup.send("semantic", outcome="hit" if hit else "miss", tier=tier, rejected=rejected)
            if hit:
                return self._finish(job_id, routing, fence, *hit)
        else:
            cache_lookup.send("semantic", outcome="bypass", tier=tier)
        if embedding is not None:
            self.redis.set(self._pending_key(job_id), np.asarray(embedding, dtype=np.float32).tobytes(),
                           ex=self.jobs.ttl_s)
        return None

    def _finish(self, job_id: str, routing: dict, fence: Optional[int], entry: dict,
                similarity: float) -> Optional[dict]:
        """Finish the job with the cached answer; None when it ended meanwhile (a cancel wins) or a later
        delivery of the job (`fence`) has begun."""
        now = time.time()
        created_at = (self.jobs.get(job_id) or {}).get("created_at", now)
        result = cached_result(entry, "semantic", created_at, now, routing=routing, similarity=similarity)
        fields = finished_fields(result, now)
        return result if self.jobs.move(job_id, fields.pop("status"), fence=fence, **fields) else None

    def lookup(self, job: dict, tier: str, embedding: np.ndarray) -> tuple[Optional[tuple[dict, float]], Optional[str]]:
        """((entry, similarity), None) on a hit; (None, guard's reason or None) on a miss."""
        namespace = semantic_namespace(job, self.models[tier], tier, len(embedding))
        rejected = None
        for member, similarity in self.mirror.nearest(embedding, namespace, CANDIDATES):
            if similarity < self.threshold:
                break
            entry = self.index.get(member)
            if entry is None:
                self.mirror.forget(member)
                continue
            if not _fits_budget(entry, job["max_tokens"]):
                continue
            rejected = mismatch(job["prompt"], entry["prompt"])
            if rejected is None:
                return (entry, similarity), None
        return None, rejected

    def store(self, job_id: str, job: dict, result: dict) -> None:
        """Keep a generated answer with the embedding its routing task parked."""
        vector = self.redis.getdel(self._pending_key(job_id))
        if vector is not None:
            self.add(job, result, np.frombuffer(vector, dtype=np.float32))

    def add(self, job: dict, result: dict, embedding: np.ndarray) -> None:
        """Keep `result` as the answer to `job`, found by `embedding`."""
        if not self.cacheable(job) or not storable(result):
            return
        namespace = semantic_namespace(job, result["model_used"], result["tier"], len(embedding))
        member = f"{namespace}:{uuid.uuid4().hex[:16]}"
        self.index.put(member, entry_from_result(job, result), np.asarray(embedding, dtype=np.float32).tobytes())


def _fits_budget(entry: dict, max_tokens: int) -> bool:
    """An answer cut at the same budget, or one that ended by itself within this budget."""
    return entry["max_tokens"] == max_tokens or (entry["finish_reason"] == "stop" and entry["tokens"] < max_tokens)

