"""Keeps job records and the worker in step with Celery's signals.

A task that fails for good marks its job failed; a worker uses patient Redis timeouts, loads its
models early, beats its presence (jobs.presence), records what it holds and hands back a dead
worker's jobs (tasks.reaper), exits when it outgrows its memory cap, and keeps generated text out
of its INFO log. `connect_signals` (called by tasks.app) wires it all.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from celery.signals import task_failure, task_received, worker_ready, worker_shutdown

from engines.provider import get_engine, loaded_engine
from heap import freeze_start_up_objects
from jobs import presence
from jobs.queues import TIERS, ROUTING_QUEUE, tier_queue
from jobs.status import JobStatus
from settings import get_settings
from tasks.context import worker_context
from tasks.delivery import fence
from tasks.reaper import Reaper, process_reaper, uses_redis_broker

log = logging.getLogger(__name__)
_stopping = threading.Event()  # the worker has stopped: its tasks are done
_exiting = threading.Event()  # it is draining to stop (memory cap)
_beating: dict = {}  # worker name and the queues of its last beat


def connect_signals() -> None:
    """Start-up: connect the handlers below and keep task results out of the log."""
    task_failure.connect(mark_job_failed)
    worker_ready.connect(warm_up)
    worker_ready.connect(start_housekeeping)
    worker_shutdown.connect(leave_presence)
    task_received.connect(hold_delivery)
    trace_log = logging.getLogger("celery.app.trace")
    if not any(isinstance(f, _HideTaskResults) for f in trace_log.filters):
        trace_log.addFilter(_HideTaskResults())


def mark_job_failed(sender=None, task_id: str | None = None, exception: BaseException | None = None, **_) -> None:
    if task_id:
        error = {"type": type(exception).__name__, "message": str(exception)[:500]}
        delivery = fence(sender) if sender is not None else None  # a superseded delivery fails nothing
        worker_context().store.move(task_id, JobStatus.FAILED, fence=delivery, error=error, finished_at=time.time())


def warm_up(sender=None, **_) -> None:
    """Load the models this worker serves in the background, so the first job does not pay for it.

    Only for pools that run tasks in this process (threads, solo): a prefork parent
    that loaded MLX or torch would hand its children a state that hangs.
    """
    if _is_prefork(sender):
        return
    threading.Thread(target=_load_models_for, args=(_consumed_queues(sender),), name="warm-up", daemon=True).start()


def start_housekeeping(sender=None, **_) -> None:
    threading.Thread(target=_housekeeping, args=(sender,), name="housekeeping", daemon=True).start()


def leave_presence(sender=None, **_) -> None:
    """Sent once the pool has finished its tasks (a warm shutdown): nothing is running any more."""
    _stopping.set()
    if _beating:
        try:
            presence.leave(worker_context().store.redis, _beating["worker"], _beating["queues"])
            if _beating.get("reaper"):
                _beating["reaper"].leave()
        except Exception as exc:
            log.warning("could not leave the live-worker list: %s", type(exc).__name__)


def hold_delivery(sender=None, request=None, **_) -> None:
    """Celery's `task_received`, in the consumer: list the message among those this worker holds."""
    if request is not None and uses_redis_broker(sender.app):
        _reaper(sender).hold(request)


def _reaper(consumer) -> Reaper:
    return process_reaper(consumer.app, worker_context().store.redis, consumer.hostname,
                          get_settings().worker_heartbeat_s)


def _is_prefork(consumer) -> bool:
    return "prefork" in type(getattr(consumer, "pool", None)).__module__


def _consumed_queues(consumer) -> set[str]:
    return {queue.name for queue in consumer.task_consumer.queues} if consumer.task_consumer else set()


def _load_models_for(queues: set[str]) -> None:
    try:
        if ROUTING_QUEUE in queues:
            worker_context().router()
            worker_context().embedder()  # POST /v1/embeddings' (the router's own when the backends agree)
        for tier in TIERS:
            if tier_queue(tier) in queues:
                get_engine(tier)
    except Exception:
        log.exception("warm-up failed; models will load on the first job")
    freeze_start_up_objects()  # full collections no longer walk the models (heap.py)


def _stalled_queues() -> set[str]:
    """The queues whose engine in this process has work but has not stepped for ENGINE_STALL_S.

    Leaving them out of the beat makes the tier look down: /ready says so, and routing sends new
    jobs to the other tier; jobs this worker takes meanwhile fail over (tasks.generation).
    """
    stalled = set()
    for tier in TIERS:
        engine = loaded_engine(tier)
        if engine is not None and engine.stalled():
            log.warning("the %s engine has not stepped for %.0fs with work to do; leaving %s",
                        tier, engine.stalled_for(), tier_queue(tier))
            stalled.add(tier_queue(tier))
    return stalled


def _housekeeping(consumer) -> None:
    """Beat presence every few seconds and watch the memory cap, until the worker stops."""
    reaper = _reaper(consumer) if uses_redis_broker(consumer.app) else None
    _beating.update(worker=consumer.hostname, queues=set(), reaper=reaper)
    while True:
        if reaper is not None:
            try:  # first and on its own: a failed presence beat must not let this process look dead
                reaper.beat()
            except Exception as exc:
                log.warning("alive beat or hand-back failed: %s", type(exc).__name__)
        try:
            queues = _consumed_queues(consumer) - _stalled_queues()
            presence.beat(worker_context().store.redis, consumer.hostname, queues, _beating["queues"],
                          get_settings().worker_heartbeat_s)
            _beating["queues"] = queues
        except Exception as exc:  # Redis away: beat again later
            log.warning("presence beat failed: %s", type(exc).__name__)
        if not _is_prefork(consumer):
            _enforce_memory_cap(consumer.app.conf.worker_max_memory_per_child)
        if _stopping.wait(get_settings().worker_heartbeat_s):
            return


def _enforce_memory_cap(limit_kb: int | None) -> None:
    """The threads pool's worker_max_memory_per_child: past it, shut down warm (supervisord restarts us)."""
    resident = _resident_kb()
    if limit_kb and resident > limit_kb and not _exiting.is_set():
        log.warning("worker uses %d KiB, over worker_max_memory_per_child=%d; finishing tasks and exiting",
                    resident, limit_kb)
        _exiting.set()  # beats go on while it drains: its running jobs are not handed back
        os.kill(os.getpid(), signal.SIGTERM)


def _resident_kb() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # not Linux: the peak resident size instead (bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak


class _HideTaskResults(logging.Filter):
    """Celery logs each task's return value at INFO; ours hold generated text, which stays out of logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": "<hidden>"}
            record.data = record.args
        return True
