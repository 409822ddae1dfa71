"""Keeps job records in step with Celery: a task that fails for good marks its job failed."""
from __future__ import annotations

import logging
import threading
import time

from celery.signals import task_failure, worker_ready

from engines.provider import get_engine
from tasks.jobs import job_store

log = logging.getLogger(__name__)


@task_failure.connect
def mark_job_failed(sender=None, task_id: str | None = None, exception: BaseException | None = None, **_) -> None:
    if task_id:
        error = {"type": type(exception).__name__, "message": str(exception)[:500]}
        job_store().update(task_id, status="failed", error=error, finished_at=time.time())


@worker_ready.connect
def warm_up(sender=None, **_) -> None:
    """Load the models this worker serves in the background, so the first job does not pay for it.

    Only for pools that run tasks in this process (threads, solo): a prefork parent
    that loaded MLX or torch would hand its children a state that hangs.
    """
    if "prefork" in type(getattr(sender, "pool", None)).__module__:
        return
    queues = {queue.name for queue in sender.task_consumer.queues} if sender.task_consumer else set()
    threading.Thread(target=_load_models_for, args=(queues,), name="warm-up", daemon=True).start()


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
