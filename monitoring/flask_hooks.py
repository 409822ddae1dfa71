"""HTTP request time and count per endpoint and status (StatsD and Prometheus), from Flask request hooks."""
from __future__ import annotations

import time

from flask import Flask, Response, g, request

from monitoring import cache_signals, celery_signals, metrics, prometheus


def register_request_metrics(app: Flask) -> None:
    """Time every request; also stamp published jobs and count the exact cache's lookups."""
    celery_signals.connect_publish_signal()
    cache_signals.connect()
    # First of the before-request hooks: requests that authentication or the rate limit refuse (their
    # hooks raise, and later hooks never run) are timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, start_timer)
    app.after_request(time_request)


def start_timer() -> None:
    g.request_started = time.perf_counter()


def time_request(response: Response) -> Response:
    started = g.pop("request_started", None)
    seconds = None if started is None else time.perf_counter() - started
    if seconds is not None:
        # The endpoint name, not the path: ids in paths would make a metric per job.
        metrics.http_request(request.endpoint or "unmatched", response.status_code, seconds * 1000)
    # The route template ("/v1/jobs/<job_id>"), for the same reason.
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    prometheus.http_request(route, request.method, response.status_code, seconds)
    return response
