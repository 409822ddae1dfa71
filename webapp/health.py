"""Probes: `GET /health` (liveness: this process answers) and `GET /ready` (readiness: Redis answers,
every queue has a live worker whose engine is stepping). `hosts` lists each queue's live workers by host.

Readiness reads worker presence from Redis (jobs.presence), which workers beat every few seconds;
it never broadcasts to the workers, so a probe costs one Redis round trip however often it runs.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from jobs.presence import live_by_host
from jobs.queues import QUEUES
from webapp.context import web

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    context = web()
    try:
        hosts = live_by_host(context.store.redis, QUEUES, context.settings.worker_heartbeat_s)
    except Exception:
        error = {"code": "service_unavailable", "message": "the queue backend (Redis) is unreachable"}
        return jsonify({"status": "unavailable", "redis": False, "workers": {}, "hosts": {}, "error": error}), 503
    workers = {queue: sum(len(names) for names in by_host.values()) for queue, by_host in hosts.items()}
    missing = [queue for queue in QUEUES if not workers[queue]]
    body = {"status": "ready" if not missing else "not_ready", "redis": True, "workers": workers, "hosts": hosts}
    if missing:
        body["error"] = {"code": "not_ready",
                         "message": f"no live worker with a stepping engine on {', '.join(missing)}"}
    return jsonify(body), 200 if not missing else 503
