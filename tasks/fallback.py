"""Tier fallback: a job whose tier has no live worker, or whose tier timed out, runs on the other tier.

Only routed jobs fall back; a job whose caller forced a tier stays on it. The routing record of a
job that fell back carries `fallback: {from, to, reason}`, and so does its result.

Escalation (tasks.escalation) moves a job the same way, with reason `weak_answer`: its routing also
carries `escalation` (the small answer's figures), and ESCALATION, not TIER_FALLBACK, switches it.
"""
from __future__ import annotations

from typing import Optional

import redis

from jobs.presence import live_workers
from jobs.queues import OTHER_TIER, tier_queue
from settings import Settings


def _moved(routing: dict, reason: str) -> dict:
    tier = routing["tier"]
    return {**routing, "tier": OTHER_TIER[tier], "fallback": {"from": tier, "to": OTHER_TIER[tier], "reason": reason}}


def _may_fall_back(settings: Settings, routing: dict) -> bool:
    return settings.tier_fallback and routing.get("rule") != "forced" and "fallback" not in routing


def with_live_tier(settings: Settings, client: redis.Redis, routing: dict) -> dict:
    """`routing`, moved to the other tier when its own has no live worker and the other has one."""
    beat = settings.worker_heartbeat_s
    if not _may_fall_back(settings, routing) or live_workers(client, tier_queue(routing["tier"]), beat):
        return routing
    if not live_workers(client, tier_queue(OTHER_TIER[routing["tier"]]), beat):
        return routing  # nobody is up: the job waits for its own tier
    return _moved(routing, "no_live_workers")


def after_failure(settings: Settings, routing: dict, reason: str) -> Optional[dict]:
    """The routing for a second try on the other tier after `reason` (timeout, engine_stalled), or None
    when the job may not fall back (again)."""
    return _moved(routing, reason) if _may_fall_back(settings, routing) else None


def escalated(routing: dict, reason: str, details: dict) -> Optional[dict]:
    """The routing for the large tier after the small answer was judged weak (`reason`), with `escalation`
    ({from, reason, **details}); None for a job that may not move (forced, or moved once already)."""
    if routing.get("rule") == "forced" or "fallback" in routing or routing.get("tier") != "small":
        return None
    return {**_moved(routing, reason), "escalation": {"from": routing["tier"], "reason": reason, **details}}
