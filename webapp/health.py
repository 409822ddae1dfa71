"""`GET /health`: is Redis reachable, and how many workers consume each queue."""
from __future__ import annotations

from flask import Blueprint, jsonify

from tasks.app import app as celery_app
from tasks.jobs import job_store

bp = Blueprint("health", __name__)
QUEUES = ("routing", "small-queue", "large-queue")


def workers_per_queue(timeout_s: float = 1.0) -> dict[str, int]:
    """Ask the workers which queues they consume (a broadcast answered within the timeout)."""
    replies = celery_app.control.inspect(timeout=timeout_s).active_queues() or {}
    counts = dict.fromkeys(QUEUES, 0)
    for queues in replies.values():
        for queue in queues:
            counts[queue["name"]] = counts.get(queue["name"], 0) + 1
    return counts


@bp.get("/health")
def health():
    try:
        job_store().redis.ping()
    except Exception:
        error = {"code": "service_unavailable", "message": "the queue backend (Redis) is unreachable"}
        return jsonify({"status": "unavailable", "redis": False, "workers": {}, "error": error}), 503
    workers = workers_per_queue()
    status = "ok" if all(workers[q] for q in QUEUES) else "degraded"
    return jsonify({"status": status, "redis": True, "workers": workers})
