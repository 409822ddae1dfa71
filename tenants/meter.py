"""Counting usage in Redis, where every process that serves jobs can afford it on each request.

Counts go to one hash, `usage:pending` (field `<owner>|<day>|<counter>`), which `tenants.ledger`
moves to SQL in batches. A month's token total per owner (`usage:month:<owner>:<YYYY-MM>`) is kept
beside it for budget checks; it is only ever added to once it exists (the ledger builds it from
SQL when a check finds it missing, e.g. after a Redis flush), so it never restarts from zero.
Imports neither SQL nor Flask nor Celery: workers count with this alone.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional

import redis
from redis.client import Pipeline

from tenants.schema import COUNTERS

PENDING = "usage:pending"
MONTH_PREFIX = "usage:month:"
NO_KEY = "-"  # the owner of jobs submitted without a key (API keys off)
MONTH_TTL_S = 40 * 24 * 3600

# INCRBY only where the month total exists: a missing one is rebuilt whole, never from this delta.
_ADD_IF_KEPT = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('incrby', KEYS[1], ARGV[1])
end
return 0
"""


def usage_day(at: Optional[float] = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, timezone.utc).strftime("%Y-%m-%d")


def usage_month(at: Optional[float] = None) -> str:
    return usage_day(at)[:7]


def month_key(owner: str, month: str) -> str:
    return f"{MONTH_PREFIX}{owner}:{month}"


def pending_field(owner: str, day: str, counter: str) -> str:
    return f"{owner}|{day}|{counter}"


class UsageMeter:
    """Adds to an owner's counters for today (UTC)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._add_if_kept = client.register_script(_ADD_IF_KEPT)

    def record(self, owner: Optional[str], pipe: Optional[Pipeline] = None, **counts: int) -> None:
        """Add `counts` (names from `tenants.schema.COUNTERS`) to `owner`'s today; joins `pipe` if given."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown usage counters: {sorted(unknown)}")
        owner, now = owner or NO_KEY, time.time()
        target = self.redis.pipeline(transaction=False) if pipe is None else pipe
        for counter, amount in counts.items():
            if amount:
                target.hincrby(PENDING, pending_field(owner, usage_day(now), counter), amount)
        tokens = counts.get("prompt_tokens", 0) + counts.get("completion_tokens", 0)
        if tokens:
            self._add_if_kept(keys=[month_key(owner, usage_month(now))], args=[tokens], client=target)
        if pipe is None:
            target.execute()

    def record_job(self, owner: Optional[str], tier: str, result: dict) -> None:
        """Count a job that generated on `tier` (finished or cancelled): its tokens and the job."""
        self.record(owner, prompt_tokens=int(result.get("prompt_tokens") or 0),
                    completion_tokens=int(result.get("tokens") or 0), **{f"jobs_{tier}": 1})
