"""Every metric the platform sends, by name, through one StatsD client configured from the settings.

STATSD_HOST (metrics are off when it is unset or empty), STATSD_PORT (8125) and
STATSD_PREFIX (llm). Timers are in milliseconds. docs list the same names.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Optional

from statsd import StatsClient

from settings import get_settings

log = logging.getLogger(__name__)
_client: Optional[StatsClient] = None
_configured = False
_lock = threading.Lock()


def client() -> Optional[StatsClient]:
    """The process's client, or None when metrics are off or the host does not resolve."""
    global _client, _configured
    with _lock:
        if not _configured:
            _configured = True
            settings = get_settings()
            host = settings.statsd_host.strip()
            if host:
                try:
                    _client = StatsClient(host, settings.statsd_port, prefix=settings.statsd_prefix or None)
                except (OSError, ValueError) as err:
                    log.warning("StatsD metrics are off: %s", err)
        return _client


def part(name: object) -> str:
    """One dot-free segment of a metric name (intents, tiers, endpoints come from data)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(name)) or "none"


def _timing(name: str, ms: float) -> None:
    if (c := client()) is not None:
        c.timing(name, ms)


def _incr(name: str, count: int = 1) -> None:
    if (c := client()) is not None:
        c.incr(name, count)


def _gauge(name: str, value: float) -> None:
    if (c := client()) is not None:
        c.gauge(name, value)


# Timers
def queue_wait(task: str, ms: float) -> None:
    _timing(f"task.{task}.queue_wait", ms)


def task_duration(task: str, ms: float) -> None:
    _timing(f"task.{task}.duration", ms)


def first_token(tier: str, ms: float) -> None:
    _timing(f"generation.{part(tier)}.first_token", ms)


def job_latency(tier: str, ms: float, cached: Optional[str] = None) -> None:
    _timing(f"job.cached.{part(cached)}.latency" if cached else f"job.{part(tier)}.latency", ms)


def http_request(endpoint: str, status: int, ms: float) -> None:
    _timing(f"http.{part(endpoint)}.{status}", ms)


# Counters
def tokens_generated(tier: str, tokens: int) -> None:
    _incr(f"generation.{part(tier)}.tokens", tokens)


def cache_lookup(kind: str, tier: str, outcome: str) -> None:
    _incr(f"cache.{part(kind)}.{part(tier)}.{part(outcome)}")


def cache_guard_rejection(tier: str) -> None:
    _incr(f"cache.semantic.{part(tier)}.guard_rejected")


def route_decision(intent: str, tier: str, rule: str) -> None:
    if (c := client()) is not None:
        with c.pipeline() as pipe:
            pipe.incr(f"route.intent.{part(intent)}")
            pipe.incr(f"route.tier.{part(tier)}")
            pipe.incr(f"route.rule.{part(rule)}")


def task_failure(task: str) -> None:
    _incr(f"task.{task}.failure")


def task_retry(task: str) -> None:
    _incr(f"task.{task}.retry")


# Gauges
def queue_depth(queue: str, depth: int) -> None:
    _gauge(f"queue.{part(queue)}.depth", depth)


def tokens_per_second(tier: str, value: float) -> None:
    _gauge(f"generation.{part(tier)}.tokens_per_s", round(value, 2))


def task_label(task_name: str) -> str:
    """`tasks.small.generate` -> `small.generate`: the task and, for generation, its tier."""
    return ".".join(part(p) for p in task_name.removeprefix("tasks.").split("."))
