"""Cache hit and miss counters, from the lookups the caches announce (`cache.events`)."""
from __future__ import annotations

from cache.events import cache_lookup
from monitoring import metrics


@cache_lookup.connect
def count_lookup(kind: str, outcome: str = "", tier: str = "", rejected: str | None = None, **_) -> None:
    metrics.cache_lookup(kind, tier, outcome)
    if rejected:
        metrics.cache_guard_rejection(tier)
