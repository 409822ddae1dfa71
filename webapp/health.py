"""`GET /health`: is Redis reachable, and how many workers consume each queue."""
from __future__ import annotations

from flask import Blueprint, jsonify

from jobs.queues import QUEUES
from webapp.context import web

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    context = web()
    try:
        context.store.redis.ping()
    except Exception:
        error = {"code": "service_unavailable", "message": "the queue backend (Redis) is unreachable"}
        return jsonify({"status": "unavailable", "redis": False, "workers": {}, "error": error}), 503
    workers = context.broker.workers_per_queue()
    status = "ok" if all(workers[q] for q in QUEUES) else "degraded"
    return jsonify({"status": status, "redis": True, "workers": workers})
