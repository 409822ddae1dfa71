"""HTTP request time per endpoint and status, from Flask request hooks."""
from __future__ import annotations

import time

from flask import Flask, g, request

from monitoring import cache_signals, celery_signals, metrics


def register_request_metrics(app: Flask) -> None:
    """Time every request; also stamp published jobs and count the exact cache's lookups."""
    celery_signals.connect_publish_signal()
    cache_signals.connect()

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
