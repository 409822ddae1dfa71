"""The dashboard's figures from Prometheus's HTTP API: PromQL over the `llm_*` families, asked within
a short budget, and left alone for a while after a failure."""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Optional

import requests

from jobs.queues import QUEUES, TIERS
from monitoring.figures import RATE_WINDOW_S, hit_counts, ratio

log = logging.getLogger(__name__)
PROM_RANGE = "5m"  # the window of Prometheus's counters and histograms
# Prometheus is asked within the request: each query gets little time, all of them together at most
# PROM_BUDGET_S, and after a failure it is left alone for PROM_RETRY_S (a dead server must not slow
# every refresh of every open dashboard by the timeout).
PROM_TIMEOUT_S = (0.5, 1.0)  # connect, read
PROM_BUDGET_S = 2.0
PROM_RETRY_S = 15.0
_prometheus_down_until: dict[str, float] = {}


class PrometheusUnavailable(Exception):
    """Prometheus did not answer, or answered something other than a query result."""


def _tiered_quantile(q: float, family: str) -> str:
    return f"histogram_quantile({q}, sum by (tier, le) (rate({family}_bucket[{PROM_RANGE}])))"


# Each query's result, by name; the label each is read by (None: one number).
PROM_QUERIES: dict[str, tuple[str, Optional[str]]] = {
    "jobs_per_s": (f"sum(rate(llm_jobs_total[{RATE_WINDOW_S}s]))", None),
    "tokens_per_s": (f"sum(rate(llm_tokens_generated_total[{RATE_WINDOW_S}s]))", None),
    "p50_ms": (_tiered_quantile(0.5, "llm_job_duration_seconds"), "tier"),
    "p95_ms": (_tiered_quantile(0.95, "llm_job_duration_seconds"), "tier"),
    "first_token_p50_ms": (_tiered_quantile(0.5, "llm_job_first_token_seconds"), "tier"),
    "first_token_p95_ms": (_tiered_quantile(0.95, "llm_job_first_token_seconds"), "tier"),
    "latency_jobs": (f"sum by (tier) (increase(llm_job_duration_seconds_count[{PROM_RANGE}]))", "tier"),
    "jobs_by_status": (f"sum by (status) (increase(llm_jobs_total[{PROM_RANGE}]))", "status"),
    # Gauges: max, not sum, so that two targets exposing the same queue count it once.
    "queue_depth": ("max by (queue) (llm_queue_depth)", "queue"),
    "workers": ("max by (queue) (llm_workers_live)", "queue"),
    "cache": (f"sum by (kind, outcome) (increase(llm_cache_lookups_total[{PROM_RANGE}]))", "kind,outcome"),
    "tiers": (f"sum by (tier) (increase(llm_routing_decisions_total[{PROM_RANGE}]))", "tier"),
    "intents": (f"sum by (intent) (increase(llm_routing_decisions_total[{PROM_RANGE}]))", "intent"),
}


def _number(sample: list) -> Optional[float]:
    """A sample's value; None for NaN (histogram_quantile over no observations) and infinities."""
    value = float(sample[1])
    return value if math.isfinite(value) else None


def prometheus_query(session: requests.Session, url: str, query: str, deadline: float) -> list[dict]:
    """An instant query's result vector (`[{"metric": {...}, "value": [t, "v"]}]`)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise PrometheusUnavailable("too slow")
    try:
        response = session.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query},
                               timeout=(min(PROM_TIMEOUT_S[0], left), min(PROM_TIMEOUT_S[1], left)))
    except requests.RequestException as problem:
        raise PrometheusUnavailable(type(problem).__name__) from problem
    try:
        body = response.json()
        if response.status_code == 200 and body["status"] == "success":
            return body["data"]["result"]
    except (ValueError, KeyError, TypeError):  # not JSON, or not Prometheus's shape: a wrong URL
        pass
    raise PrometheusUnavailable(f"HTTP {response.status_code}, no query result")


def _by_label(vector: list[dict], labels: Optional[str]) -> Any:
    """One number (labels None), or {label value: number}; several labels join with '/'."""
    if labels is None:
        return _number(vector[0]["value"]) if vector else 0.0
    names = labels.split(",")
    return {"/".join(sample["metric"].get(name, "") for name in names): _number(sample["value"]) for sample in vector}


def query_prometheus(url: str) -> dict[str, Any]:
    """Every query of PROM_QUERIES, read by its label; PrometheusUnavailable at the first that fails."""
    if _prometheus_down_until.get(url, 0) > time.monotonic():
        raise PrometheusUnavailable("it did not answer a moment ago")
    deadline = time.monotonic() + PROM_BUDGET_S
    try:
        with requests.Session() as session:
            return {name: _read_vector(prometheus_query(session, url, query, deadline), labels)
                    for name, (query, labels) in PROM_QUERIES.items()}
    except PrometheusUnavailable:
        _prometheus_down_until[url] = time.monotonic() + PROM_RETRY_S
        raise


def _read_vector(vector: list[dict], labels: Optional[str]) -> Any:
    try:
        return _by_label(vector, labels)
    except (KeyError, IndexError, TypeError, ValueError) as problem:  # samples not shaped as Prometheus's
        raise PrometheusUnavailable(f"an unreadable result ({type(problem).__name__})") from problem


def prometheus_figures(url: str) -> dict:
    """The same figures as `platform_figures` (and the queues), from Prometheus."""
    found = query_prometheus(url)
    quantiles = ("p50_ms", "p95_ms", "first_token_p50_ms", "first_token_p95_ms")
    latency = {tier: {"jobs": round(found["latency_jobs"].get(tier) or 0),
                      **{name: _ms(found[name].get(tier)) for name in quantiles}} for tier in TIERS}
    return {
        "source": "prometheus",
        "window": {"range": PROM_RANGE, "rate_s": RATE_WINDOW_S},
        "throughput": {"jobs_per_s": round(found["jobs_per_s"] or 0, 3),
                       "tokens_per_s": round(found["tokens_per_s"] or 0, 3)},
        "latency": latency,
        "queues": {queue: {"depth": _count(found["queue_depth"].get(queue)),
                           "workers": _count(found["workers"].get(queue))} for queue in QUEUES},
        "cache": _prometheus_cache(found["cache"]),
        "routing": {"tiers": _counts(found["tiers"]), "intents": _counts(found["intents"])},
        "errors": _prometheus_outcomes(found["jobs_by_status"]),
    }


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds * 1000, 1)


def _count(value: Optional[float]) -> Optional[int]:
    return None if value is None else round(value)


def _counts(values: dict[str, Optional[float]]) -> dict[str, int]:
    """Label value: count, largest first (increase() extrapolates: counts come back fractional)."""
    counted = {label: round(value or 0) for label, value in values.items()}
    return dict(sorted(counted.items(), key=lambda item: -item[1]))


def _prometheus_cache(lookups: dict[str, Optional[float]]) -> dict[str, dict]:
    def count(kind: str, outcome: str) -> int:
        return round(lookups.get(f"{kind}/{outcome}") or 0)

    return {kind: hit_counts(count(kind, "hit"), count(kind, "hit") + count(kind, "miss"))
            for kind in ("exact", "semantic")}


def _prometheus_outcomes(statuses: dict[str, Optional[float]]) -> dict[str, Any]:
    count = {status: round(statuses.get(status) or 0) for status in ("succeeded", "failed", "cancelled")}
    return {**count, "running": None, "failed_ratio": ratio(count["failed"], sum(count.values()))}
