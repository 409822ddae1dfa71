"""`GET /metrics`: the platform's Prometheus families as the web app exposes them (monitoring/prometheus.py).

Every web process's HTTP and exact-cache figures (gunicorn's processes added up through
PROMETHEUS_MULTIPROC_DIR), and what this scrape reads from Redis: live workers per queue and whether
Redis answered. With API keys on, only an admin key may scrape (authentication has run already).
"""
from __future__ import annotations

from typing import Optional

import redis
from flask import Blueprint, Response, g, request

from jobs.presence import live_counts
from jobs.queues import QUEUES
from monitoring import prometheus
from webapp.context import web
from webapp.errors import APIError

bp = Blueprint("metrics", __name__)


def _live_workers() -> Optional[dict[str, int]]:
    """Live workers per queue, or None when Redis does not answer (this read is the scrape's Redis check)."""
    context = web()
    try:
        return live_counts(context.store.redis, QUEUES, context.settings.worker_heartbeat_s)
    except (redis.RedisError, OSError):
        return None


@bp.get("/metrics")
def metrics() -> Response:
    if web().settings.api_keys_required and not (g.get("api_key") or {}).get("admin"):
        raise APIError(403, "forbidden", "GET /metrics needs an admin key")
    body, content_type = prometheus.web_exposition(_live_workers(), request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)
