"""Celery tasks: routing on `routing`, generation on `small-queue` and `large-queue`."""
