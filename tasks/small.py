"""Generation on `small-queue`: the cheap tier."""
from celery import shared_task

from tasks.generation import run_generation


@shared_task(bind=True, name="tasks.small.generate")
def generate(self, job: dict, routing: dict) -> dict:
    return run_generation(self, "small", job, routing)
