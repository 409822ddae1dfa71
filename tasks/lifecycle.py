"""Keeps job records in step with Celery: a task that fails for good marks its job failed."""
from __future__ import annotations

import time

from celery.signals import task_failure

from tasks.jobs import job_store


@task_failure.connect
def mark_job_failed(sender=None, task_id: str | None = None, exception: BaseException | None = None, **_) -> None:
    if task_id:
        error = {"type": type(exception).__name__, "message": str(exception)[:500]}
        job_store().update(task_id, status="failed", error=error, finished_at=time.time())
