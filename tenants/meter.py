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

# ARGV[1]: tokens for the month total, then field, amount pairs for the pending hash. The month total is
# only added to where it exists: a missing one is rebuilt whole (tenants.ledger), never from this delta.
_RECORD = """
for i = 2, #ARGV, 2 do
  redis.call('hincrby', KEYS[1], ARGV[i], ARGV[i + 1])
end
if tonumber(ARGV[1]) > 0 and redis.call('exists', KEYS[2]) == 1 then
  redis.call('incrby', KEYS[2], ARGV[1])
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
        self._record = client.register_script(_RECORD)

    def record(self, owner: Optional[str], pipe: Optional[Pipeline] = None, **counts: int) -> None:
        """Add `counts` (names from `tenants.schema.COUNTERS`) to `owner`'s today; joins `pipe` if given."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown usage counters: {sorted(unknown)}")
        owner, now = owner or NO_KEY, time.time()
        added = {pending_field(owner, usage_day(now), counter): amount for counter, amount in counts.items() if amount}
        tokens = counts.get("prompt_tokens", 0) + counts.get("completion_tokens", 0)
        month = month_key(owner, usage_month(now))
        if pipe is not None and not tokens:  # plain commands: a script would make the pipeline ask Redis for
            for field, amount in added.items():  # it first, a round trip more (the web's job creation)
                pipe.hincrby(PENDING, field, amount)
            return
        self._record(keys=[PENDING, month], args=[tokens, *(part for item in added.items() for part in item)],
                     client=pipe)

    def record_job(self, owner: Optional[str], tier: str, result: dict) -> None:
        """Count a job that generated on `tier` (finished or cancelled): its tokens and the job."""
        self.record(owner, prompt_tokens=int(result.get("prompt_tokens") or 0),
                    completion_tokens=int(result.get("tokens") or 0), **{f"jobs_{tier}": 1})
