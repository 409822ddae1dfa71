"""Prometheus families of the platform: each defined once (FAMILIES), recorded from the same hooks and
signals as the StatsD metrics, and exposed by every process that has them (docs/metrics.md).

- Web processes (gunicorn, several per host) record HTTP requests and exact-cache lookups. `GET /metrics`
  (webapp/metrics.py, `web_exposition`) adds up every web process's figures in prometheus_client's
  multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (else it serves this process's own), plus two
  families read at scrape time: live workers per queue and whether Redis answered.
- Each Celery worker records its tasks' figures and, from `start_worker_server` (worker start-up), serves
  them on METRICS_PORT with its engines' batch width, steps and KV usage read at scrape time.

Importing this module does nothing: the registry and the families are built on first use, in the process
that records (after any fork), and servers start only from the start-up functions. Label values are few
by construction (tiers, queues, statuses, intents, route templates), never job ids, keys or prompts.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               start_http_server)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from jobs.queues import QUEUES, TIERS

log = logging.getLogger(__name__)

# Seconds. An exact-cache hit takes about a millisecond; POST /generate waits up to WAIT_TIMEOUT_S.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
ROUTING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Family:
    """One metric family as Prometheus sees it."""

    name: str  # as exposed: counters end in _total
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    scraped: bool = False  # read at scrape time (engines, presence, Redis) instead of recorded as it happens
    gauge_mode: str = "livesum"  # how multiprocess mode would combine a recorded gauge's processes


FAMILIES: tuple[Family, ...] = (
    Family("llm_http_requests_total", "counter", ("route", "method", "status"),
           "HTTP requests answered, by Flask route template (unmatched: no route), method and status."),
    Family("llm_http_request_duration_seconds", "histogram", ("route", "method"),
           "Time from a request's arrival to its response's start.", HTTP_BUCKETS),
    Family("llm_job_queue_wait_seconds", "histogram", ("tier",),
           "Time a generated job waited in queues (routing and tier), result queue_ms.", QUEUE_BUCKETS),
    Family("llm_job_routing_seconds", "histogram", ("tier",),
           "Time the routing task took for a generated job, result routing_ms.", ROUTING_BUCKETS),
    Family("llm_job_first_token_seconds", "histogram", ("tier",),
           "Time from generation start to the first token, result first_token_ms.", FIRST_TOKEN_BUCKETS),
    Family("llm_job_duration_seconds", "histogram", ("tier",),
           "Time from submission to the end of generation, result latency_ms.", JOB_BUCKETS),
    Family("llm_jobs_total", "counter", ("tier", "status"),
           "Jobs that ended in a worker, by tier (none when unknown) and status."),
    Family("llm_tokens_generated_total", "counter", ("tier",), "Tokens generated."),
    Family("llm_prompt_tokens_total", "counter", ("tier",), "Prompt tokens of generated jobs."),
    Family("llm_queue_depth", "gauge", ("queue",), "Messages waiting in a queue, every priority counted.",
           gauge_mode="livemax"),
    Family("llm_jobs_in_flight", "gauge", ("tier",), "Generation jobs this worker process is running."),
    Family("llm_engine_batch_width", "gauge", ("tier",), "Requests in the engine's current batch.",
           scraped=True),
    Family("llm_engine_steps_total", "counter", ("tier",), "Decode steps the engine completed.", scraped=True),
    Family("llm_engine_kv_cache_usage_ratio", "gauge", ("tier",),
           "Share of the engine's KV cache in use, 0 to 1 (llama.cpp engines).", scraped=True),
    Family("llm_cache_lookups_total", "counter", ("kind", "outcome"),
           "Answer cache lookups by kind (exact, semantic) and outcome (hit, miss, skip, bypass)."),
    Family("llm_routing_decisions_total", "counter", ("intent", "tier"), "Routing decisions."),
    Family("llm_fallbacks_total", "counter", ("from_tier", "to_tier", "reason"),
           "Jobs moved to the other tier, by reason."),
    Family("llm_escalations_total", "counter", ("from_tier", "to_tier"),
           "Jobs whose weak small answer was run again on the large tier (escalation)."),
    Family("llm_redeliveries_total", "counter", ("queue",), "Task deliveries beyond the first."),
    Family("llm_lost_messages_total", "counter", ("queue",),
           "Jobs in flight whose message was nowhere in the broker, sent on again by the reaper."),
    Family("llm_workers_live", "gauge", ("queue",), "Live workers consuming a queue (worker presence).",
           scraped=True),
    Family("llm_redis_up", "gauge", (), "1 when Redis answered the web app's check at this scrape, else 0.",
           scraped=True),
)
FAMILY = {family.name: family for family in FAMILIES}
ENGINE_FAMILIES = ("llm_engine_batch_width", "llm_engine_steps_total", "llm_engine_kv_cache_usage_ratio")
WEB_STATE_FAMILIES = ("llm_workers_live", "llm_redis_up")
TIMINGS = (("llm_job_queue_wait_seconds", "queue_ms"), ("llm_job_routing_seconds", "routing_ms"),
           ("llm_job_first_token_seconds", "first_token_ms"), ("llm_job_duration_seconds", "latency_ms"))


# --- This process's recorded families ------------------------------------------------------------------------

class _Recorded:
    """The process's registry and its recorded families, built on first use."""

    def __init__(self) -> None:
        # _created series would double the series of every counter and histogram, and multiprocess mode
        # has none: without them a web process and a worker expose the same shape.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.metrics = {f.name: _instrument(f, self.registry) for f in FAMILIES if not f.scraped}
        self.serving = False


def _instrument(family: Family, registry: CollectorRegistry) -> MetricWrapperBase:
    if family.kind == "counter":
        return Counter(family.name, family.help, family.labels, registry=registry)
    if family.kind == "histogram":
        return Histogram(family.name, family.help, family.labels, registry=registry, buckets=family.buckets)
    # Only workers (one process each) record gauges today; the mode keeps a multiprocess reading right.
    return Gauge(family.name, family.help, family.labels, registry=registry, multiprocess_mode=family.gauge_mode)


_recorded: Optional[_Recorded] = None
_lock = threading.Lock()


def recorded() -> _Recorded:
    """This process's registry and families (built on the first call)."""
    global _recorded
    if _recorded is None:
        with _lock:
            if _recorded is None:
                _recorded = _Recorded()
    return _recorded


def _metric(name: str) -> MetricWrapperBase:
    return recorded().metrics[name]


def _tier(tier: object) -> str:
    return tier if tier in TIERS else "none"


def _queue(queue: object) -> str:
    return queue if queue in QUEUES else "other"


# --- Recording, called from monitoring's hooks and signal handlers --------------------------------------------

def http_request(route: str, method: str, status: int, seconds: Optional[float]) -> None:
    """One answered request; `seconds` is None when the request was not timed."""
    method = method if method in HTTP_METHODS else "other"  # clients may send any method name
    _metric("llm_http_requests_total").labels(route, method, str(status)).inc()
    if seconds is not None:
        _metric("llm_http_request_duration_seconds").labels(route, method).observe(seconds)


def cache_lookup(kind: str, outcome: str) -> None:
    _metric("llm_cache_lookups_total").labels(kind, outcome).inc()


def job_started(tier: str) -> None:
    """A generation task started in this process."""
    _metric("llm_jobs_in_flight").labels(_tier(tier)).inc()


def job_left(tier: str) -> None:
    """A generation task ended in this process, however it ended."""
    _metric("llm_jobs_in_flight").labels(_tier(tier)).dec()


def job_finished(tier: Optional[str], status: str) -> None:
    """A job ended: `succeeded`, `failed` or `cancelled`."""
    if status not in JOB_STATUSES:
        raise ValueError(f"unknown job status {status!r}")
    _metric("llm_jobs_total").labels(_tier(tier), status).inc()


def generation_finished(result: Mapping) -> None:
    """A generation task's result: the job's end, its tokens and, unless cancelled, its timings."""
    tier = _tier(result.get("tier"))
    cancelled = result.get("finish_reason") == "cancelled"
    job_finished(tier, "cancelled" if cancelled else "succeeded")
    _metric("llm_tokens_generated_total").labels(tier).inc(result.get("tokens") or 0)
    _metric("llm_prompt_tokens_total").labels(tier).inc(result.get("prompt_tokens") or 0)
    if cancelled:
        return  # its timings end at the cancel: they would pull the tier's latencies down
    for name, field in TIMINGS:
        if result.get(field) is not None:
            _metric(name).labels(tier).observe(result[field] / 1000)


def routing_decision(intent: str, tier: str) -> None:
    _metric("llm_routing_decisions_total").labels(str(intent), _tier(tier)).inc()


def fallback(from_tier: str, to_tier: str, reason: str) -> None:
    _metric("llm_fallbacks_total").labels(_tier(from_tier), _tier(to_tier), str(reason)).inc()


def escalation(from_tier: str, to_tier: str) -> None:
    _metric("llm_escalations_total").labels(_tier(from_tier), _tier(to_tier)).inc()


def redelivery(queue: str) -> None:
    _metric("llm_redeliveries_total").labels(_queue(queue)).inc()


def lost_message(queue: str) -> None:
    _metric("llm_lost_messages_total").labels(_queue(queue)).inc()


def queue_depth(queue: str, depth: int) -> None:
    _metric("llm_queue_depth").labels(_queue(queue)).set(depth)


# --- Families read at scrape time ------------------------------------------------------------------------------

def empty_family(name: str) -> Metric:
    """A scrape-time family with no samples yet."""
    family = FAMILY[name]
    kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    return kind(family.name, family.help, labels=family.labels)


class EngineCollector:
    """llm_engine_* of this worker's loaded engines, read when Prometheus scrapes (cheap accessors)."""

    def __init__(self, engines: Callable[[], Mapping[str, object]]) -> None:
        self._engines = engines  # tier -> engine or None (not loaded in this process)

    def describe(self) -> list[Metric]:
        return [empty_family(name) for name in ENGINE_FAMILIES]

    def collect(self) -> list[Metric]:
        width, steps, usage = self.describe()
        for tier, engine in self._engines().items():
            if engine is None:
                continue
            width.add_metric([tier], engine.batch_width)
            steps.add_metric([tier], engine.steps)
            if (ratio := engine.kv_usage) is not None:
                usage.add_metric([tier], ratio)
        return [width, steps, usage]


class _Fixed:
    """A collector that hands out families read beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def web_state(live: Optional[Mapping[str, int]]) -> list[Metric]:
    """llm_workers_live and llm_redis_up from one presence read: `live` is None when Redis did not answer."""
    workers, redis_up = (empty_family(name) for name in WEB_STATE_FAMILIES)
    for queue, count in (live or {}).items():
        workers.add_metric([queue], count)
    redis_up.add_metric([], 0 if live is None else 1)
    return [workers, redis_up]


def multiprocess_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR (prometheus_client reads it itself at import), or ''."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def web_exposition(live: Optional[Mapping[str, int]], accept: str = "") -> tuple[bytes, str]:
    """The web app's `GET /metrics` body and content type: every web process's figures (multiprocess
    mode) or this process's own, and the web state read for this scrape. The format follows the
    scraper's Accept header (Prometheus text, or OpenMetrics), as on the workers' ports."""
    registry = CollectorRegistry()
    path = multiprocess_dir()
    if path:
        MultiProcessCollector(registry, path)
    else:
        registry.register(recorded().registry)
    registry.register(_Fixed(web_state(live)))
    try:
        encode, content_type = choose_encoder(accept)
    except (TypeError, ValueError):  # a malformed Accept (e.g. `version=abc`): the plain text format
        encode, content_type = generate_latest, CONTENT_TYPE_LATEST
    return encode(registry), content_type


# --- Worker start-up --------------------------------------------------------------------------------------------

def start_worker_server(host: str, port: int, engines: Callable[[], Mapping[str, object]]) -> bool:
    """Start-up of a worker: serve its families and its engines' on http://host:port/metrics (a thread).

    Once per process; False (and a warning) when the port cannot be bound: the worker runs on unscraped.
    """
    state = recorded()
    with _lock:
        if state.serving:
            return True
        try:
            start_http_server(port, addr=host, registry=state.registry)
        except OSError as err:
            log.warning("Prometheus metrics are not served on %s:%d: %s", host, port, err)
            return False
        state.registry.register(EngineCollector(engines))
        for queue in QUEUES:  # a rare event's counter is at 0 from the start, so increase() sees its first one
            _metric("llm_lost_messages_total").labels(queue)
        state.serving = True
    log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    return True
