"""The queues: their names, which tier and task each serves, priorities, and how deep they are.

Backpressure, metrics, health and fallback all read queues through this module. Depth is read
the way kombu's Redis transport stores messages: one list per priority step of
`broker_transport_options["priority_steps"]`, so every priority is counted.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import redis

ROUTING_QUEUE = "routing"
TIERS = ("small", "large")
OTHER_TIER = {"small": "large", "large": "small"}
ROUTE_TASK = "tasks.routing.route"
EMBED_TASK = "tasks.routing.embed"  # POST /v1/embeddings: the routing worker's embedder, no job record
DEFAULT_PRIORITY = 5  # API priority when none is given (0-9, 9 most urgent)
# kombu's default steps; celeryconfig sets 0..9 so that each API priority has its own list.
KOMBU_DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"  # kombu keeps priority step p>0 of queue q in the list q + SEP + p


def tier_queue(tier: str) -> str:
    return f"{tier}-queue"


def generation_task(tier: str) -> str:
    """The name of the task that generates on `tier`."""
    return f"tasks.{tier}.generate"


GENERATION_TASKS = frozenset(generation_task(tier) for tier in TIERS)


def task_queue(name: str) -> str:
    """The queue a job task is routed to (celeryconfig's `task_routes`: tasks.<routing|tier>.*)."""
    stage = name.split(".")[1]
    return ROUTING_QUEUE if stage == ROUTING_QUEUE else tier_queue(stage)
QUEUES = (ROUTING_QUEUE, *(tier_queue(tier) for tier in TIERS))


def broker_priority(api_priority: int) -> int:
    """The API's priority (0-9, 9 most urgent) as kombu's Redis priority (0 most urgent)."""
    return 9 - api_priority


def job_priority(job: dict) -> int:
    """The broker priority a job's messages are sent with."""
    return broker_priority(job.get("priority", DEFAULT_PRIORITY))


def queues_for(job: dict) -> list[str]:
    """The queues a job passes through: routing, then its forced tier's queue or either tier's."""
    tiers = [job["tier"]] if job.get("tier") in TIERS else list(TIERS)
    return [ROUTING_QUEUE] + [tier_queue(tier) for tier in tiers]


def redis_lists(queue: str, transport_options: Mapping) -> list[str]:
    """The Redis lists that hold `queue`'s waiting messages, one per priority step."""
    steps: Sequence[int] = transport_options.get("priority_steps", KOMBU_DEFAULT_PRIORITY_STEPS)
    return [queue] + [f"{queue}{PRIORITY_SEP}{step}" for step in steps if step]


# Sums each queue's lists in Redis: one reply per queue instead of ten, since every submission reads them.
_SUM_LENGTHS = """
local depths, key = {}, 1
for queue = 1, #ARGV do
  local total = 0
  for _ = 1, tonumber(ARGV[queue]) do
    total = total + redis.call('llen', KEYS[key])
    key = key + 1
  end
  depths[queue] = total
end
return depths
"""


def queue_depths(client: redis.Redis, transport_options: Mapping, queues: Sequence[str] = QUEUES) -> dict[str, int]:
    """Messages waiting in each queue over all its priority lists (not those a worker already holds)."""
    lists = [redis_lists(queue, transport_options) for queue in queues]
    depths = client.register_script(_SUM_LENGTHS)(keys=[key for keys in lists for key in keys],
                                                  args=[len(keys) for keys in lists])
    return dict(zip(queues, map(int, depths)))
