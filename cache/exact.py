"""The exact cache: the web process answers a repeated deterministic request without queueing it."""
from __future__ import annotations

from typing import Optional

import redis

from cache.entries import entry_from_result, storable
from cache.events import cache_lookup
from cache.index import BoundedIndex
from cache.keys import deterministic, exact_key, lookups_wanted


class ExactCache:
    """Answers keyed by `cache.keys.exact_key`, bounded by a TTL and a maximum number of entries."""

    def __init__(self, client: redis.Redis, models: dict[str, str], ttl_s: int = 86400,
                 max_entries: int = 10000) -> None:
        self.index = BoundedIndex(client, "cache:exact", ttl_s, max_entries)
        self.models = models

    def key(self, job: dict) -> str:
        return exact_key(job, self.models)

    def entry_key(self, job: dict) -> str:
        """The Redis key of the job's entry (exact hits point at it)."""
        return self.index.entry_key(self.key(job))

    @property
    def enabled(self) -> bool:
        return self.index.max_entries > 0

    def lookup(self, job: dict) -> Optional[dict]:
        """The cached entry for this request, or None; announces the outcome on `cache_lookup`."""
        tier = job.get("tier", "auto")
        if not self.enabled or not deterministic(job):
            cache_lookup.send("exact", outcome="skip", tier=tier)
            return None
        if not lookups_wanted(job):
            cache_lookup.send("exact", outcome="bypass", tier=tier)
            return None
        entry = self.index.get(self.key(job))
        cache_lookup.send("exact", outcome="hit" if entry else "miss", tier=tier)
        return entry

    def store(self, job: dict, result: dict) -> None:
        """Keep a generated answer; a bypassing request refreshes the entry it skipped."""
        if self.enabled and deterministic(job) and storable(result):
            self.index.put(self.key(job), entry_from_result(job, result))

