"""The web app's side of Celery, as Flower has it: tasks submitted by name, queue settings read from
`broker_transport_options`, worker replies to a broadcast, embeddings awaited as Celery results.
No module of `tasks/` is imported."""
from __future__ import annotations

import threading
from typing import Optional, Sequence

from celery import Celery
from celery.exceptions import TaskRevokedError, TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

from celeryconfig import celery_config

from jobs.queues import DEFAULT_PRIORITY, EMBED_TASK, QUEUES, broker_priority, job_priority, queue_depths
from jobs.store import JobStore
from jobs.transit import message_for
from settings import Settings

# Publishing must fail fast when Redis is away: the caller gets a 503, not a hang.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


class EmbeddingTimeout(Exception):
    """No routing worker returned the vectors within the wait (none running, or all busy)."""


class EmbeddingFailed(Exception):
    """The routing worker ran the embedding task and it raised."""


class ResultStoreUnavailable(OperationalError):
    """Celery's result consumer could not reconnect to Redis. Celery raises a bare RuntimeError for it
    ("the Celery application must be restarted"), which would be a 500: it is the app's 503, as every
    broker outage is (webapp.errors), and the Broker builds a new consumer for the next request."""


class Broker:
    """Submits jobs to the routing queue, asks the routing worker for embeddings and reads the queues,
    through Celery client apps."""

    def __init__(self, settings: Settings) -> None:
        # Job submissions go through an app without a result backend: a job's answer is read from its
        # record, and with Celery's Redis backend every send_task subscribed to the task's result, on a
        # pub/sub connection of its own per greenlet (a backend is one per thread, and under gevent a
        # greenlet is a thread): a new connection per request, and a fifth of the web worker's CPU.
        self.celery = Celery("llm_platform", set_as_current=False)
        self.celery.conf.update(celery_config(settings), result_backend=None)
        # Embeddings wait on their Celery result; that app's result backend is one per process.
        # Celery's Redis result consumer locks its pub/sub, so sharing it is safe.
        self._settings = settings
        self._waiting = self._waiting_app()
        self._waiting_lock = threading.Lock()

    def _waiting_app(self) -> Celery:
        """The Celery app embeddings wait through. Its result consumer retries a lost Redis 20 times a
        second apart by default (a waiting request would hang ~19 s before its 503); it gives up as fast
        as publishing does, and a consumer that gave up is replaced (`_replace_waiting`)."""
        app = Celery("llm_platform_embeddings", set_as_current=False)
        config = celery_config(self._settings)
        # Added to the configured options (with Sentinel, the master's name), not in their place.
        transport = {**config["result_backend_transport_options"], "retry_policy": PUBLISH_RETRY}
        app.conf.update(config, result_backend_thread_safe=True, result_backend_transport_options=transport)
        return app

    def _replace_waiting(self, failed: Celery) -> None:
        """A new app for the next request: under gevent, a result consumer whose reconnect gave up keeps
        raising its error after Redis is back (its drainer greenlet has ended for good)."""
        with self._waiting_lock:
            if self._waiting is failed:
                self._waiting = self._waiting_app()

    def submit(self, job_id: str, job: dict, routing: Optional[dict] = None) -> None:
        """Queue the job's routing task, or its tier's generation task when `routing` is already decided;
        the task id is the job id."""
        name, args = message_for(job, routing)
        self.celery.send_task(name, args=args, task_id=job_id, priority=job_priority(job), retry_policy=PUBLISH_RETRY)

    def embed(self, texts: list[str], timeout_s: float, priority: int = DEFAULT_PRIORITY) -> dict:
        """The routing worker's vectors for `texts`: `{"data", "prompt_tokens", "model"}` (tasks.routing.embed).

        Waits up to `timeout_s`, then raises EmbeddingTimeout; a task that raised is EmbeddingFailed;
        Redis or the broker away is their own error (the app's 503). `priority` is the API's (0-9).
        """
        # `expires`: a message still queued when the caller gives up is dropped, not computed for nobody.
        app = self._waiting
        try:
            result = app.send_task(EMBED_TASK, args=[texts], priority=broker_priority(priority),
                                   expires=timeout_s, retry_policy=PUBLISH_RETRY)
        except RuntimeError as exc:  # subscribing to the result: see ResultStoreUnavailable
            self._replace_waiting(app)
            raise ResultStoreUnavailable(str(exc).strip()) from exc
        try:
            # The result arrives by pub/sub at once; a timeout is noticed within a second (Celery's drainer).
            return result.get(timeout=timeout_s, propagate=True)
        except (CeleryTimeoutError, TaskRevokedError):  # revoked: a worker took it after it expired
            raise EmbeddingTimeout(f"no embedding within {timeout_s:.1f}s") from None
        except RuntimeError as exc:
            if exc.__cause__ is None and result.failed():  # the task's own RuntimeError, raised again here
                raise EmbeddingFailed(f"RuntimeError: {str(exc)[:200]}") from exc
            self._replace_waiting(app)
            raise ResultStoreUnavailable(str(exc).strip()) from exc
        except Exception as exc:
            if result.failed():  # the task raised (state read from the result just fetched, not Redis)
                raise EmbeddingFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
            raise  # Redis or the broker: the app maps those to 503
        finally:
            # Vectors are read once: delete the stored result and stop listening for it now rather than
            # keep it in Redis for `result_expires` (a day).
            result.forget()

    def queue_depths(self, store: JobStore, queues: Sequence[str] = QUEUES) -> dict[str, int]:
        """Messages waiting in each of `queues` (default: all), every priority counted."""
        return queue_depths(store.redis, self.celery.conf.broker_transport_options, queues)

    def workers_per_queue(self, timeout_s: float = 1.0) -> dict[str, int]:
        """Ask the workers which queues they consume (a broadcast answered within the timeout)."""
        replies = self.celery.control.inspect(timeout=timeout_s).active_queues() or {}
        counts = dict.fromkeys(QUEUES, 0)
        for queues in replies.values():
            for queue in queues:
                counts[queue["name"]] = counts.get(queue["name"], 0) + 1
        return counts
