"""`GET /dashboard`, the live dashboard page, and `GET /v1/dashboard`, the rolling figures it charts.

The platform's own figures come from Redis: the recent-jobs list (the last `RECENT_JOBS_MAX` job
records), the queue depths and the workers' presence beats. With `PROMETHEUS_URL` set, the aggregates
come from Prometheus's HTTP API instead (PromQL over the `llm_*` families of `monitoring/`); when it
does not answer within a short timeout, the platform's own figures are served and the JSON says so.
The last jobs and the latest failures always come from the job records: Prometheus keeps no jobs.

Access: the page loads without a key (like the playground, it asks for one). With API keys on, an
admin key gets the platform-wide figures; any other key gets figures over its own jobs only, and no
queue depths or workers (they would tell it about other keys' load).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional

from flask import Blueprint, jsonify, render_template

from jobs.presence import live_counts
from jobs.queues import QUEUES
from jobs.recent import recent_jobs
from monitoring.figures import platform_figures
from monitoring.prometheus_api import PrometheusUnavailable, prometheus_figures
from webapp.apikeys import caller_id, caller_owner
from webapp.context import web
from webapp.submission import iso

log = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__)

REFRESH_S = 3  # how often the page asks for new figures
LAST_JOBS = 12  # jobs in the time-split chart
LAST_FAILURES = 5


# ---------------------------------------------------------------- the routes


@bp.get("/dashboard")
def dashboard_page():
    settings = web().settings
    return render_template("dashboard.html", keys_required=settings.api_keys_required, refresh_s=REFRESH_S,
                           flower_url=settings.flower_url, max_jobs=settings.recent_jobs_max)


@bp.get("/v1/dashboard")
def dashboard_figures():
    context, owner, now = web(), caller_owner(), time.time()
    records = recent_jobs(context.store, context.settings.recent_jobs_max, owner=owner)
    body: dict[str, Any] = {"source": "platform", "scope": "platform" if owner is None else "key",
                            "key_id": caller_id(), "generated_at": iso(now), "refresh_s": REFRESH_S,
                            "fallback": None}
    if owner is not None:  # its own jobs' figures; queues and workers are platform-wide, so none
        body.update(platform_figures(records, now, context.settings.recent_jobs_max), queues=None)
    elif context.settings.prometheus_url:
        body.update(_prometheus_or_fallback(context.settings.prometheus_url, records, now))
    else:
        body.update(platform_figures(records, now, context.settings.recent_jobs_max), queues=_platform_queues())
    failures = [record for record in records if record["status"] == "failed"]
    body["errors"]["recent"] = [failure_view(record) for record in failures[:LAST_FAILURES]]
    body["jobs"] = [job_timing(record) for record in records[:LAST_JOBS]]
    return jsonify(body)


def _platform_queues() -> dict[str, dict]:
    """Messages waiting in each queue (every priority) and its live workers (fresh presence beats)."""
    context = web()
    depths = context.broker.queue_depths(context.store)
    workers = live_counts(context.store.redis, QUEUES, context.settings.worker_heartbeat_s)
    return {queue: {"depth": depths.get(queue), "workers": workers.get(queue)} for queue in QUEUES}


def _prometheus_or_fallback(url: str, records: list[dict], now: float) -> dict:
    """Prometheus's figures, or the platform's own with `fallback` saying why."""
    try:
        return prometheus_figures(url)
    except PrometheusUnavailable as problem:
        log.warning("dashboard: Prometheus did not answer (%s); serving the platform's own figures", problem)
        figures = platform_figures(records, now, web().settings.recent_jobs_max)
        fallback = f"Prometheus did not answer ({problem}): these are the platform's own figures"
        return {**figures, "queues": _platform_queues(), "fallback": fallback}


def failure_view(record: dict) -> dict:
    error = record.get("error") or {}
    return {"id": record["id"], "at": iso(record.get("finished_at") or record["created_at"]),
            "tier": (record.get("routing") or {}).get("tier"), "type": error.get("type"),
            "message": error.get("message")}


def job_timing(record: dict) -> dict:
    """One job of the time-split chart. The parts add up to its latency: waiting in the queues, routing,
    the time to its first token and the rest of the generation; a cache hit's whole latency is `cache`."""
    result = record.get("result") or {}
    routing = record.get("routing") or {}
    parts: dict[str, Optional[float]] = dict.fromkeys(("queue", "routing", "first_token", "generation", "cache"))
    if result.get("cached"):
        parts["cache"] = result.get("latency_ms")
    elif "generation_ms" in result:
        first = result.get("first_token_ms") or 0
        parts.update(queue=result.get("queue_ms"), routing=result.get("routing_ms"), first_token=first,
                     generation=round(max(0.0, result["generation_ms"] - first), 1))
    return {"id": record["id"], "status": record["status"], "created_at": iso(record["created_at"]),
            "tier": result.get("tier") or routing.get("tier"), "intent": routing.get("intent"),
            "cached": result.get("cached") or False, "tokens": result.get("tokens"),
            "latency_ms": result.get("latency_ms"), "split_ms": parts}
