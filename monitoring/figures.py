"""The platform's own rolling figures, computed from job records (newest first): throughput, latency
percentiles per tier, cache hit ratios, the routing split and outcomes. Pure functions: the caller
reads the records (the recent-jobs list) and the clock."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Optional

from jobs.queues import TIERS

RATE_WINDOW_S = 60  # throughput: jobs and tokens finished in the last minute, as rate(...[1m])


def platform_figures(records: list[dict], now: float, max_jobs: int) -> dict:
    """Every aggregate over the job records (newest first), without queues (they are not in records)."""
    window = _rate_window(records, now, max_jobs)
    return {
        "source": "platform",
        "window": {"jobs": len(records), "max_jobs": max_jobs, "rate_s": round(window, 1)},
        "throughput": throughput(records, now, window),
        "latency": latency_by_tier(records),
        "cache": cache_ratios(records),
        "routing": routing_split(records),
        "errors": outcomes(records),
    }


def _rate_window(records: list[dict], now: float, max_jobs: int) -> float:
    """The last minute; shorter when the list is full and its oldest job is younger (older jobs have
    fallen off the list, so counting them over a full minute would understate the rate)."""
    if len(records) < max_jobs or not records:
        return RATE_WINDOW_S
    return max(1.0, min(RATE_WINDOW_S, now - min(record["created_at"] for record in records)))


def _generated(record: dict) -> Optional[dict]:
    """The result of a job a model generated (not a cache hit, not failed), else None."""
    result = record.get("result") or {}
    return result if record["status"] == "succeeded" and result and not result.get("cached") else None


def throughput(records: list[dict], now: float, window_s: float) -> dict:
    done = [record for record in records if record.get("finished_at", 0) >= now - window_s]
    tokens = sum(int((_generated(record) or {}).get("tokens") or 0) for record in done)
    return {"jobs_per_s": round(len(done) / window_s, 3), "tokens_per_s": round(tokens / window_s, 3)}


def percentile(values: list[float], q: float) -> Optional[float]:
    """The q-quantile (0..1) by linear interpolation between the closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)


def latency_by_tier(records: list[dict]) -> dict[str, dict]:
    """p50 and p95 of the total latency and of the time to first token, per tier, over generated jobs
    (cache hits are counted in `cache`: their few milliseconds would hide the models' latency)."""
    results = [result for result in map(_generated, records) if result]
    return {tier: _latency([result for result in results if result.get("tier") == tier]) for tier in TIERS}


def _latency(results: list[dict]) -> dict:
    def timings(field: str) -> list[float]:
        return [result[field] for result in results if isinstance(result.get(field), (int, float))]

    total, first = timings("latency_ms"), timings("first_token_ms")
    return {"jobs": len(results), "p50_ms": percentile(total, 0.5), "p95_ms": percentile(total, 0.95),
            "first_token_p50_ms": percentile(first, 0.5), "first_token_p95_ms": percentile(first, 0.95)}


def ratio(hits: float, lookups: float) -> Optional[float]:
    return round(hits / lookups, 4) if lookups else None


def cache_ratios(records: list[dict]) -> dict[str, dict]:
    """Hits over lookups: every finished job looked up the exact cache; those it missed, the semantic one."""
    answered = [record for record in records if record["status"] in ("succeeded", "failed")]
    kinds = Counter((record.get("result") or {}).get("cached") for record in answered)
    return {"exact": hit_counts(kinds["exact"], len(answered)),
            "semantic": hit_counts(kinds["semantic"], len(answered) - kinds["exact"])}


def hit_counts(hits: int, lookups: int) -> dict:
    return {"hits": hits, "lookups": lookups, "ratio": ratio(hits, lookups)}


def routing_split(records: list[dict]) -> dict[str, dict[str, int]]:
    decisions = [record["routing"] for record in records if isinstance(record.get("routing"), dict)]
    return {"tiers": dict(Counter(decision.get("tier") or "none" for decision in decisions).most_common()),
            "intents": dict(Counter(decision.get("intent") or "none" for decision in decisions).most_common())}


def outcomes(records: list[dict]) -> dict[str, Any]:
    statuses = Counter(record["status"] for record in records)
    finished = statuses["succeeded"] + statuses["failed"] + statuses["cancelled"]
    return {"succeeded": statuses["succeeded"], "failed": statuses["failed"], "cancelled": statuses["cancelled"],
            "running": len(records) - finished, "failed_ratio": ratio(statuses["failed"], finished)}


