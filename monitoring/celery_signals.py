"""Task metrics from Celery signals (StatsD and Prometheus): queue wait, durations, generation figures,
routes, fallbacks, redeliveries, failures, and the worker's Prometheus port.

Workers connect them all (`connect_worker_signals`, from tasks.app); the web app connects only the
enqueue stamp (`connect_publish_signal`), which its publishes need. Queue wait is measured from that
stamp, a message header set at publish time, so a task replaced by another (routing -> generation)
gets the wait of its own queue.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping, Optional

from celery import states
from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun, task_retry, worker_ready

from engines.confidence import WEAK_ANSWER
from jobs.control import cancel_requested
from jobs.queues import ROUTE_TASK, TIERS, generation_task
from jobs.store import JobStore
from monitoring import cache_signals, metrics, prometheus
from monitoring.queues import start_sampler

ENQUEUED_AT = "enqueued_at"
GENERATION_TIERS = {generation_task(tier): tier for tier in TIERS}
_started: dict[tuple[str, str], float] = {}
_sampler: threading.Thread | None = None
_worker: dict = {}  # what connect_worker_signals was given


def connect_publish_signal() -> None:
    """Start-up of a process that publishes tasks: stamp each message with its enqueue time."""
    before_task_publish.connect(stamp_enqueue_time)


def connect_worker_signals(job_store: Callable[[], JobStore], depth_interval_s: float,
                           engines: Callable[[], Mapping[str, object]] = dict, metrics_host: str = "127.0.0.1",
                           metrics_port: int = 0) -> None:
    """Start-up of a worker: every task metric, cache lookups, the queue-depth sampler and, when
    `metrics_port` is above 0, the Prometheus port (serving `engines()`'s figures too: tier -> engine or None).

    `job_store` gives the worker's job store once it exists (it is built after any fork).
    """
    _worker.update(job_store=job_store, depth_interval_s=depth_interval_s, engines=engines,
                   metrics_host=metrics_host, metrics_port=metrics_port)
    connect_publish_signal()
    task_prerun.connect(task_started)
    task_postrun.connect(task_finished)
    task_failure.connect(count_failure)
    task_retry.connect(count_retry)
    worker_ready.connect(serve_prometheus)
    worker_ready.connect(sample_queue_depths)
    cache_signals.connect()


def stamp_enqueue_time(headers: dict | None = None, **_) -> None:
    if headers is not None:
        headers[ENQUEUED_AT] = time.time()


def task_started(task_id: str = "", task=None, **_) -> None:
    _started[(task_id, task.name)] = time.perf_counter()
    if task.name in GENERATION_TIERS:
        prometheus.job_started(GENERATION_TIERS[task.name])
    enqueued = task.request.get(ENQUEUED_AT)
    if enqueued:
        metrics.queue_wait(metrics.task_label(task.name), max(0.0, (time.time() - float(enqueued)) * 1000))
    delivery = task.request.delivery_info or {}
    if delivery.get("redelivered"):  # set by kombu on a message restored after its consumer died or quit
        prometheus.redelivery(delivery.get("routing_key") or "")


def task_finished(task_id: str = "", task=None, retval=None, state: str = "", **_) -> None:
    tier = GENERATION_TIERS.get(task.name)
    if tier:
        prometheus.job_left(tier)
    started = _started.pop((task_id, task.name), None)
    if started is not None:
        metrics.task_duration(metrics.task_label(task.name), (time.perf_counter() - started) * 1000)
    if task.name == ROUTE_TASK and state in (states.SUCCESS, states.IGNORED):  # IGNORED: replaced by generation
        _routing_finished(task_id, retval if state == states.SUCCESS else None)
    elif state == states.SUCCESS and isinstance(retval, dict) and retval.get("cached") is False:
        _generation_finished(retval)
    elif tier and state == states.IGNORED:  # replaced: the job fell back to the other tier
        _generation_replaced(task_id, tier)
    if state == states.SUCCESS and retval is None:  # skipped or stopped: cancelled, or an earlier delivery ended it
        _ended_without_result(task_id, tier)


def _routing_finished(job_id: str, cached_result: dict | None) -> None:
    routing = (_worker["job_store"]().get(job_id) or {}).get("routing")
    if routing:
        metrics.route_decision(routing["intent"], routing["tier"], routing["rule"])
        prometheus.routing_decision(routing["intent"], routing["tier"])
        if moved := routing.get("fallback"):  # no live worker for the decided tier
            prometheus.fallback(moved["from"], moved["to"], moved["reason"])
    if isinstance(cached_result, dict) and cached_result.get("cached"):
        metrics.job_latency(cached_result["tier"], cached_result["latency_ms"], cached=cached_result["cached"])
        prometheus.job_finished(cached_result["tier"], "succeeded")


def _generation_finished(result: dict) -> None:
    tier, tokens = result["tier"], result.get("tokens") or 0
    metrics.tokens_generated(tier, tokens)
    metrics.first_token(tier, result["first_token_ms"])
    metrics.job_latency(tier, result["latency_ms"])
    if result.get("generation_ms"):
        metrics.tokens_per_second(tier, tokens / (result["generation_ms"] / 1000))
    prometheus.generation_finished(result)


def _generation_replaced(job_id: str, tier: str) -> None:
    moved = ((_worker["job_store"]().get(job_id) or {}).get("routing") or {}).get("fallback")
    if moved and moved.get("from") == tier:
        prometheus.fallback(moved["from"], moved["to"], moved["reason"])
        if moved["reason"] == WEAK_ANSWER:
            prometheus.escalation(moved["from"], moved["to"])


def _ended_without_result(job_id: str, tier: Optional[str]) -> None:
    if cancel_requested(_worker["job_store"](), job_id):
        prometheus.job_finished(tier, "cancelled")


def count_failure(sender=None, **_) -> None:
    metrics.task_failure(metrics.task_label(sender.name))
    if sender.name == ROUTE_TASK or sender.name in GENERATION_TIERS:  # an embeddings task is no job
        prometheus.job_finished(GENERATION_TIERS.get(sender.name), "failed")


def count_retry(sender=None, **_) -> None:
    metrics.task_retry(metrics.task_label(sender.name))


def serve_prometheus(sender=None, **_) -> None:
    if _worker.get("metrics_port", 0) > 0:
        prometheus.start_worker_server(_worker["metrics_host"], _worker["metrics_port"], _worker["engines"])


def sample_queue_depths(sender=None, **_) -> None:
    global _sampler
    if _sampler is None and (metrics.client() is not None or _worker.get("metrics_port", 0) > 0):
        _sampler = start_sampler(_worker["job_store"]().redis, sender.app.conf.broker_transport_options,
                                 _worker["depth_interval_s"])
