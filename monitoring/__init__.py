"""Observability: StatsD metrics from Celery signals and Flask hooks, and `make stats`."""
