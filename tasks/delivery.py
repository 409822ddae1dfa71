"""What every job task does when a message reaches it: skip cancelled jobs, count deliveries, cap them.

Celery has no redelivery cap of its own: with late acks a job that kills its worker is redelivered
forever. Each delivery is counted in Redis (per stage), and a job delivered more than
`max_deliveries` times fails instead of running again.
"""
from __future__ import annotations

import logging
import time

from celery import Task

from tasks.control import cancel_requested
from tasks.jobs import job_store

log = logging.getLogger(__name__)

DEFAULT_PRIORITY = 5  # API priority when none is given


class DeliveryLimitExceeded(Exception):
    """The job came back more often than allowed; it most likely kills the worker that runs it."""


def broker_priority(api_priority: int) -> int:
    """The API's priority (0-9, 9 most urgent) as kombu's Redis priority (0 most urgent)."""
    return 9 - api_priority


class JobTask(Task):
    """Base class of the routing and generation tasks; the job id is the task id."""

    def __call__(self, *args, **kwargs):
        job_id = self.request.id
        if job_id is None or self.request.is_eager:
            return super().__call__(*args, **kwargs)
        store = job_store()
        if cancel_requested(store.redis, job_id):
            store.advance(job_id, status="cancelled", finished_at=time.time())
            log.info("job %s was cancelled before %s started; skipped", job_id, self.name)
            return None
        deliveries = store.count_delivery(job_id, self.name)
        if deliveries > self.app.conf.max_deliveries:
            raise DeliveryLimitExceeded(
                f"{self.name} was delivered {deliveries} times (limit {self.app.conf.max_deliveries}); "
                "each earlier attempt ended with its worker dying")
        return super().__call__(*args, **kwargs)


def job_priority(job: dict) -> int:
    """The broker priority a job's messages are sent with."""
    return broker_priority(job.get("priority", DEFAULT_PRIORITY))
