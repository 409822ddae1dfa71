"""HTTP request time per endpoint and status, from Flask request hooks."""
from __future__ import annotations

import time

from flask import Flask, g, request

import monitoring.celery_signals  # noqa: F401  (enqueue stamps on the jobs this process publishes)
from monitoring import metrics


def register_request_metrics(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def time_request(response):
        started = g.pop("request_started", None)
        if started is not None:
            # The endpoint name, not the path: ids in paths would make a metric per job.
            endpoint = request.endpoint or "unmatched"
            metrics.http_request(endpoint, response.status_code, (time.perf_counter() - started) * 1000)
        return response
