"""A test-only job task that kills the worker running it, every time.

Production workers never import this module (only a test worker started with `-I poison_tasks`
does), and a worker without it rejects a message naming its task, so no request can reach it.
"""
import os
import signal

from celery import shared_task

from tasks.delivery import JobTask


@shared_task(bind=True, base=JobTask, name="tests.poison.kill_worker")
def kill_worker(self) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
