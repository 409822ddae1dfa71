"""Task metrics from Celery signals: queue wait, durations, generation figures, routes, failures.

Loaded by every worker (tasks.app includes it) and by the web app, whose publishes need the
enqueue stamp. Queue wait is measured from that stamp, a message header set at publish time,
so a task replaced by another (routing -> generation) gets the wait of its own queue.
"""
from __future__ import annotations

import threading
import time

from celery import states
from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun, task_retry, worker_ready

import monitoring.cache_signals  # noqa: F401  (cache hits and misses, counted in the same processes)
from monitoring import metrics
from monitoring.queues import start_sampler

ENQUEUED_AT = "enqueued_at"
ROUTING_TASK = "tasks.routing.route"
_started: dict[tuple[str, str], float] = {}
_sampler: threading.Thread | None = None


@before_task_publish.connect
def stamp_enqueue_time(headers: dict | None = None, **_) -> None:
    if headers is not None:
        headers[ENQUEUED_AT] = time.time()


@task_prerun.connect
def task_started(task_id: str = "", task=None, **_) -> None:
    _started[(task_id, task.name)] = time.perf_counter()
    enqueued = task.request.get(ENQUEUED_AT)
    if enqueued:
        metrics.queue_wait(metrics.task_label(task.name), max(0.0, (time.time() - float(enqueued)) * 1000))


@task_postrun.connect
def task_finished(task_id: str = "", task=None, retval=None, state: str = "", **_) -> None:
    started = _started.pop((task_id, task.name), None)
    if started is not None:
        metrics.task_duration(metrics.task_label(task.name), (time.perf_counter() - started) * 1000)
    if task.name == ROUTING_TASK and state in (states.SUCCESS, states.IGNORED):  # IGNORED: replaced by generation
        _routing_finished(task_id, retval if state == states.SUCCESS else None)
    elif state == states.SUCCESS and isinstance(retval, dict) and retval.get("cached") is False:
        _generation_finished(retval)


def _routing_finished(job_id: str, cached_result: dict | None) -> None:
    from tasks.jobs import job_store

    routing = (job_store().get(job_id) or {}).get("routing")
    if routing:
        metrics.route_decision(routing["intent"], routing["tier"], routing["rule"])
    if isinstance(cached_result, dict) and cached_result.get("cached"):
        metrics.job_latency(cached_result["tier"], cached_result["latency_ms"], cached=cached_result["cached"])


def _generation_finished(result: dict) -> None:
    tier, tokens = result["tier"], result.get("tokens") or 0
    metrics.tokens_generated(tier, tokens)
    metrics.first_token(tier, result["first_token_ms"])
    metrics.job_latency(tier, result["latency_ms"])
    if result.get("generation_ms"):
        metrics.tokens_per_second(tier, tokens / (result["generation_ms"] / 1000))


@task_failure.connect
def count_failure(sender=None, **_) -> None:
    metrics.task_failure(metrics.task_label(sender.name))


@task_retry.connect
def count_retry(sender=None, **_) -> None:
    metrics.task_retry(metrics.task_label(sender.name))


@worker_ready.connect
def sample_queue_depths(**_) -> None:
    global _sampler
    if _sampler is None and metrics.client() is not None:
        from tasks.jobs import job_store

        _sampler = start_sampler(job_store().redis)
