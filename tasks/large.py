"""Generation on `large-queue`: the capable tier."""
from celery import shared_task

from tasks.generation import run_generation


@shared_task(bind=True, name="tasks.large.generate")
def generate(self, job: dict, routing: dict) -> dict:
    return run_generation(self, "large", job, routing)
