"""Keeps job records and the worker in step with Celery's signals.

A task that fails for good marks its job failed; a worker uses patient Redis timeouts, loads its
models early, beats its presence (tasks.presence), exits when it outgrows its memory cap, and keeps
generated text out of its INFO log.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from celery.signals import celeryd_init, task_failure, worker_ready, worker_shutdown

from engines.provider import get_engine
from tasks import presence
from tasks.jobs import job_store

log = logging.getLogger(__name__)
_stopping = threading.Event()
_beating: dict = {}  # worker name and the queues of its last beat


@task_failure.connect
def mark_job_failed(sender=None, task_id: str | None = None, exception: BaseException | None = None, **_) -> None:
    if task_id:
        error = {"type": type(exception).__name__, "message": str(exception)[:500]}
        job_store().advance(task_id, status="failed", error=error, finished_at=time.time())


@celeryd_init.connect
def use_worker_redis_timeouts(conf=None, **_) -> None:
    """Workers wait longer for Redis than web requests do: a slow moment must not fail a job."""
    timeout = conf.worker_redis_timeout_s
    conf.redis_socket_timeout = conf.redis_socket_connect_timeout = conf.broker_connection_timeout = timeout
    conf.broker_transport_options = {**conf.broker_transport_options,
                                     "socket_timeout": timeout, "socket_connect_timeout": timeout}


@worker_ready.connect
def warm_up(sender=None, **_) -> None:
    """Load the models this worker serves in the background, so the first job does not pay for it.

    Only for pools that run tasks in this process (threads, solo): a prefork parent
    that loaded MLX or torch would hand its children a state that hangs.
    """
    if _is_prefork(sender):
        return
    threading.Thread(target=_load_models_for, args=(_consumed_queues(sender),), name="warm-up", daemon=True).start()


@worker_ready.connect
def start_housekeeping(sender=None, **_) -> None:
    threading.Thread(target=_housekeeping, args=(sender,), name="housekeeping", daemon=True).start()


@worker_shutdown.connect
def leave_presence(sender=None, **_) -> None:
    _stopping.set()
    if _beating:
        try:
            presence.leave(job_store().redis, _beating["worker"], _beating["queues"])
        except Exception as exc:
            log.warning("could not leave the live-worker list: %s", type(exc).__name__)


def _is_prefork(consumer) -> bool:
    return "prefork" in type(getattr(consumer, "pool", None)).__module__


def _consumed_queues(consumer) -> set[str]:
    return {queue.name for queue in consumer.task_consumer.queues} if consumer.task_consumer else set()


def _load_models_for(queues: set[str]) -> None:
    try:
        if "routing" in queues:
            from tasks.routing import get_router

            get_router()
        for tier in ("small", "large"):
            if f"{tier}-queue" in queues:
                get_engine(tier)
    except Exception:
        log.exception("warm-up failed; models will load on the first job")


def _housekeeping(consumer) -> None:
    """Beat presence every few seconds and watch the memory cap, until the worker stops."""
    _beating.update(worker=consumer.hostname, queues=set())
    while True:
        try:
            queues = _consumed_queues(consumer)
            presence.beat(job_store().redis, consumer.hostname, queues, _beating["queues"])
            _beating["queues"] = queues
        except Exception as exc:  # Redis away: beat again later
            log.warning("presence beat failed: %s", type(exc).__name__)
        if not _is_prefork(consumer):
            _enforce_memory_cap(consumer.app.conf.worker_max_memory_per_child)
        if _stopping.wait(presence.heartbeat_s()):
            return


def _enforce_memory_cap(limit_kb: int | None) -> None:
    """The threads pool's worker_max_memory_per_child: past it, shut down warm (supervisord restarts us)."""
    resident = _resident_kb()
    if limit_kb and resident > limit_kb and not _stopping.is_set():
        log.warning("worker uses %d KiB, over worker_max_memory_per_child=%d; finishing tasks and exiting",
                    resident, limit_kb)
        _stopping.set()
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


logging.getLogger("celery.app.trace").addFilter(_HideTaskResults())
