"""Generation on `small-queue`: the cheap tier."""
from typing import Optional

from celery import shared_task

from tasks.delivery import JobTask
from tasks.generation import run_generation


@shared_task(bind=True, base=JobTask, name="tasks.small.generate")
def generate(self, job: dict, routing: dict) -> Optional[dict]:
    return run_generation(self, "small", job, routing)
