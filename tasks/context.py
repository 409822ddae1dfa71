"""What a worker process builds once, on first use (after any fork): its settings, the job store,
the answer caches, the usage meter, the embedder and the router. Tasks and signal handlers read them
from `worker_context()`."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

from cache.exact import ExactCache
from cache.semantic import SemanticCache
from engines.provider import served_models
from jobs import settings_client
from jobs.store import JobStore
from jobs.streams import TokenBatches
from routing.embedder import Embedder
from routing.live import LiveRouter, configured_files
from routing.router import Router
from settings import Settings, get_settings
from tenants.meter import UsageMeter


@dataclass
class WorkerContext:
    """The process-wide objects of a worker, built from one settings object."""

    settings: Settings
    store: JobStore
    exact_cache: ExactCache
    semantic_cache: SemanticCache
    meter: UsageMeter  # usage per key, counted in Redis (the web app writes it through to SQL)
    tokens: TokenBatches  # token events of every job this process runs, written in batches
    _live_router: Optional[LiveRouter] = None
    _router_lock: threading.Lock = field(default_factory=threading.Lock)
    _embedders: dict[str, Embedder] = field(default_factory=dict)  # by backend
    _embedder_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, settings: Settings) -> "WorkerContext":
        # Workers wait longer for Redis than web requests do: a slow moment must not fail a job.
        store = JobStore(settings_client(settings, settings.worker_redis_timeout_s), settings.job_ttl_s)
        models = served_models(settings)
        return cls(settings, store,
                   ExactCache(store.redis, models, settings.exact_cache_ttl_s, settings.exact_cache_max_entries),
                   SemanticCache(store, models, settings.semantic_cache_threshold, settings.semantic_cache_ttl_s,
                                 settings.semantic_cache_max_entries),
                   UsageMeter(store.redis), TokenBatches(store, settings.stream_batch_s))

    def router(self) -> Router:
        """The router, built on first use so the embedding model loads in the process that uses it.

        Rebuilt when the routes or parameters file changes; an invalid edit keeps the previous
        router and logs an error.
        """
        with self._router_lock:
            if self._live_router is None:
                self._live_router = LiveRouter(self.routing_embedder().encode, *configured_files(self.settings))
        return self._live_router.get()

    def embedder(self) -> Embedder:
        """The embeddings task's embedder (EMBEDDING_BACKEND): the model's own vectors."""
        return self._embedder_for(self.settings.embedding_backend.strip())

    def routing_embedder(self) -> Embedder:
        """The router's embedder (ROUTING_EMBEDDING_BACKEND); the same object as `embedder()` when the two
        backends are one, so that one copy of the model is in memory and their calls merge into batches."""
        return self._embedder_for(self.settings.routing_embedding_backend.strip())

    def _embedder_for(self, backend: str) -> Embedder:
        with self._embedder_lock:
            if backend not in self._embedders:
                embedder = Embedder(backend=backend, settings=self.settings)
                embedder.encode(["warm up"])  # load the model now (worker warm-up calls this), not on a job
                self._embedders[backend] = embedder
            return self._embedders[backend]


_context: Optional[WorkerContext] = None
_lock = threading.Lock()


def worker_context() -> WorkerContext:
    """This process's worker context, built from its settings on the first call."""
    global _context
    with _lock:
        if _context is None:
            _context = WorkerContext.build(get_settings())
        return _context
