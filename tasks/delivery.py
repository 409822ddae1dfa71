"""What every job task does when a message reaches it: skip cancelled jobs, count deliveries, cap them,
and number the delivery so that an earlier one can no longer write.

Celery has no redelivery cap of its own: with late acks a job that kills its worker is redelivered
forever. Each delivery is counted in Redis (per stage), and a job delivered more than
`max_deliveries` times fails instead of running again.

Fencing: a job handed back while its first worker was only cut off or slow (tasks.reaper) runs twice
for a while. A delivery's first move of the job takes the job's next number (`start_stage`, in the
same step, so a delivery that may not run the job takes none) and its later writes carry it
(`fence(task)`); the job store refuses writes of any earlier delivery, so the job ends once and
its stream is never mixed.

Redis failing under a running job (a failover, a short outage) does not fail the job: once Redis answers
again the task is sent again (a new delivery, within the delivery cap).
"""
from __future__ import annotations

import logging
import time
from typing import NoReturn, Optional

import redis
from celery import Celery, Task
from celery.exceptions import Ignore
from kombu.exceptions import OperationalError

from jobs.control import cancel_key
from jobs import transit
from jobs.queues import generation_task, job_priority, task_queue
from jobs.sentinel import replicated
from jobs.status import JobStatus
from tasks.context import worker_context

log = logging.getLogger(__name__)
# Sentinel's MasterNotFoundError included; kombu raises OperationalError when a publish (routing's hand-over,
# a move to the other tier) cannot reach the broker.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, OperationalError)
OUTAGE_WAIT_S = 60.0  # how long a task waits for Redis to answer again before it gives the job up


class DeliveryLimitExceeded(Exception):
    """The job came back more often than allowed; it most likely kills the worker that runs it."""


class JobTask(Task):
    """Base class of the routing and generation tasks; the job id is the task id.

    No Celery result is stored: the job record is the result, and storing it twice cost every job two
    more Redis round trips and its answer encoded once more."""

    ignore_result = True

    def __call__(self, *args, **kwargs):
        job_id = self.request.id
        if job_id is None or self.request.is_eager:
            return super().__call__(*args, **kwargs)
        store = worker_context().store
        try:  # the delivery's own bookkeeping meets a failover as often as the task does
            return self._deliver(store, job_id, *args, **kwargs)
        except REDIS_UNAVAILABLE as exc:
            raise self._again_after_outage(store.redis, exc)

    def _deliver(self, store, job_id: str, *args, **kwargs):
        deliveries = store.count_delivery(job_id, self.name, unless=cancel_key(job_id))
        if not deliveries:  # cancelled
            store.move(job_id, JobStatus.CANCELLED, finished_at=time.time())
            log.info("job %s was cancelled before %s started; skipped", job_id, self.name)
            return None
        if deliveries > self.app.conf.max_deliveries:
            raise DeliveryLimitExceeded(
                f"{self.name} was delivered {deliveries} times (limit {self.app.conf.max_deliveries}); "
                "each earlier attempt ended with its worker dying")
        return super().__call__(*args, **kwargs)

    def _again_after_outage(self, client: redis.Redis, exc: Exception) -> Exception:
        """Once Redis answers and takes the message, send the task again as a new delivery and return
        Ignore (this delivery ends, acknowledged); when Redis stays away, the error itself, and the job
        fails as any task failure does. The delivery cap (MAX_DELIVERIES) bounds the rounds."""
        log.warning("job %s: Redis failed under %s (%s: %s); sending it again once Redis answers",
                    self.request.id, self.name, type(exc).__name__, exc)
        deadline = time.monotonic() + OUTAGE_WAIT_S
        while time.monotonic() < deadline:
            try:
                client.ping()
                self._send_again()
                return Ignore()
            except Exception as error:  # noqa: BLE001 - Redis, or a broker connection still being rebuilt
                log.info("job %s: not sent again yet (%s: %s)", self.request.id, type(error).__name__, error)
                time.sleep(0.5)
        return exc

    def _send_again(self) -> None:
        # A connection of its own: the worker's pooled producer may still hold the channel that failed
        # (Celery's own retry then gives up on the message).
        with self.app.connection_for_write() as connection:
            send_on(self.app, worker_context().store.redis, self.request.id, connection)


def send_on(app: Celery, client: redis.Redis, job_id: str, connection=None) -> Optional[str]:
    """Send the job on from the stage its record is in (jobs.transit.pending_message), at its priority; the
    queue it went to, or None when it has ended. From the record, not from the task that failed: a task whose
    move to the other tier landed but whose replacement's publish failed must not run its old tier again."""
    message = transit.pending_message(client, job_id)
    if message is None:
        return None
    name, args, job = message
    app.send_task(name, args=args, task_id=job_id, priority=job_priority(job), connection=connection)
    transit.sent_again(client, job_id)
    return task_queue(name)


def settle(task: Task) -> None:
    """With REDIS_MIN_REPLICAS, wait (up to REDIS_REPLICA_WAIT_MS) until replicas hold every write of the
    job so far: its end, or its hand-over to its tier, must not be lost with a master that dies before
    Celery acknowledges the message (the job would then wait for the visibility timeout). A Redis error
    here is an outage like any other (the task is sent again); no replica in time is only logged."""
    context = worker_context()
    settings = context.settings
    if settings.redis_min_replicas <= 0:
        return
    if not replicated(context.store.redis, settings.redis_min_replicas, settings.redis_replica_wait_ms):
        log.warning("job %s: no %d replica(s) acknowledged its writes within %d ms", task.request.id,
                    settings.redis_min_replicas, settings.redis_replica_wait_ms)


def hand_over(task: Task, job: dict, routing: dict) -> NoReturn:
    """Replace `task` by the generation task of `routing`'s tier (same job id, the job's priority), once
    replicas hold the job's move to `queued` (`settle`): routing's hand-over, a fallback, an escalation."""
    settle(task)
    target = task.app.tasks[generation_task(routing["tier"])]
    raise task.replace(target.s(job, routing).set(priority=job_priority(job)))


def start_stage(task: Task, status: JobStatus, **fields) -> bool:
    """The task's first move of its job (to `status`, with `fields`), which numbers its delivery; False
    when the job may not move (cancelled, ended, or already past this stage)."""
    # `worker` (celery -n name@host) says which host runs the job; the public job view leaves it out.
    delivery = worker_context().store.start_delivery(task.request.id, status, worker=task.request.hostname,
                                                     **fields)
    task.request.fence = delivery or None
    return bool(delivery)


def fence(task: Task) -> Optional[int]:
    """The running delivery's number, for the job store's writes; None outside a numbered delivery."""
    return getattr(task.request, "fence", None)
