"""Generation on `large-queue`: the capable tier."""
from typing import Optional

from celery import shared_task

from tasks.delivery import JobTask
from tasks.generation import run_generation


@shared_task(bind=True, base=JobTask, name="tasks.large.generate")
def generate(self, job: dict, routing: dict) -> Optional[dict]:
    return run_generation(self, "large", job, routing)
