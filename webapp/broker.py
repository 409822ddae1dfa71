"""The web app's side of Celery, as Flower has it: tasks submitted by name, queue settings read from
`broker_transport_options`, worker replies to a broadcast. No module of `tasks/` is imported."""
from __future__ import annotations

from celery import Celery

from celeryconfig import celery_config

from jobs.queues import QUEUES, ROUTE_TASK, job_priority, queue_depths
from jobs.store import JobStore
from settings import Settings

# Publishing must fail fast when Redis is away: the caller gets a 503, not a hang.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


class Broker:
    """Submits jobs to the routing queue and reads the queues, through a Celery client app."""

    def __init__(self, settings: Settings) -> None:
        self.celery = Celery("llm_platform", set_as_current=False)
        self.celery.conf.update(celery_config(settings))

    def submit(self, job_id: str, job: dict) -> None:
        """Queue the job's routing task; its task id is the job id."""
        self.celery.send_task(ROUTE_TASK, args=[job], task_id=job_id, priority=job_priority(job),
                              retry_policy=PUBLISH_RETRY)

    def queue_depths(self, store: JobStore) -> dict[str, int]:
        """Messages waiting in each queue, every priority counted."""
        return queue_depths(store.redis, self.celery.conf.broker_transport_options)

    def workers_per_queue(self, timeout_s: float = 1.0) -> dict[str, int]:
        """Ask the workers which queues they consume (a broadcast answered within the timeout)."""
        replies = self.celery.control.inspect(timeout=timeout_s).active_queues() or {}
        counts = dict.fromkeys(QUEUES, 0)
        for queues in replies.values():
            for queue in queues:
                counts[queue["name"]] = counts.get(queue["name"], 0) + 1
        return counts
