"""Tier fallback: a job whose tier has no live worker, or whose tier timed out, runs on the other tier.

Only routed jobs fall back; a job whose caller forced a tier stays on it. The routing record of a
job that fell back carries `fallback: {from, to, reason}`, and so does its result.
"""
from __future__ import annotations

import os
from typing import Optional

import redis
from celery import Celery, Task

from tasks.presence import live_workers

OTHER_TIER = {"small": "large", "large": "small"}


def fallback_enabled() -> bool:
    return os.environ.get("TIER_FALLBACK", "1").lower() not in ("0", "false", "no", "off")


def tier_queue(tier: str) -> str:
    return f"{tier}-queue"


def generation_task(app: Celery, tier: str) -> Task:
    """The task that generates on `tier`."""
    return app.tasks[f"tasks.{tier}.generate"]


def _moved(routing: dict, reason: str) -> dict:
    tier = routing["tier"]
    return {**routing, "tier": OTHER_TIER[tier], "fallback": {"from": tier, "to": OTHER_TIER[tier], "reason": reason}}


def _may_fall_back(routing: dict) -> bool:
    return fallback_enabled() and routing.get("rule") != "forced" and "fallback" not in routing


def with_live_tier(client: redis.Redis, routing: dict) -> dict:
    """`routing`, moved to the other tier when its own has no live worker and the other has one."""
    if not _may_fall_back(routing) or live_workers(client, tier_queue(routing["tier"])):
        return routing
    if not live_workers(client, tier_queue(OTHER_TIER[routing["tier"]])):
        return routing  # nobody is up: the job waits for its own tier
    return _moved(routing, "no_live_workers")


def after_timeout(routing: dict) -> Optional[dict]:
    """The routing for a second try on the other tier, or None when the job may not fall back (again)."""
    return _moved(routing, "timeout") if _may_fall_back(routing) else None
