"""Cache hit and miss counters, from the lookups the caches announce (`cache.events`)."""
from __future__ import annotations

from cache.events import cache_lookup
from monitoring import metrics, prometheus


def connect() -> None:
    """Start-up: count every cache lookup this process makes."""
    cache_lookup.connect(count_lookup)


def count_lookup(kind: str, outcome: str = "", tier: str = "", rejected: str | None = None, **_) -> None:
    metrics.cache_lookup(kind, tier, outcome)
    prometheus.cache_lookup(kind, outcome)
    if rejected:
        metrics.cache_guard_rejection(tier)
