"""Which broker deliveries each worker holds, and which workers are dead, so that a dead worker's jobs
go back to their queues within seconds rather than after the broker's visibility timeout.

With Redis as the broker, a message a worker took stays in kombu's `unacked` hash until the worker
acknowledges it; only the visibility timeout (longer than the longest time limit) hands it back when
the worker dies. So each worker lists the delivery tags it receives (`hold`) and keeps a key alive
while it runs (`mark_alive`, every beat, draining included). A worker whose key expired is dead:
`dead_holders` names it and `take_held` gives its tags to a reaper (tasks.reaper), which hands them
back through kombu. A tag already acknowledged is no longer in `unacked`, so handing it back does
nothing: the lists need no bookkeeping on acknowledgement, only a prune now and then.
"""
from __future__ import annotations

import redis

HOLDERS_KEY = "workers:holders"
REAPER_LOCK_KEY = "workers:reaper"
# A worker is dead once it has not beaten for this many beats: more than presence's three, so that a
# worker slowed for a moment is not robbed of jobs it is still running (they would run twice).
DEAD_AFTER_BEATS = 5

# KEYS: the worker's held hash, kombu's unacked hash. Drops the tags kombu no longer holds (acknowledged).
PRUNE_SCRIPT = """
local dropped = 0
for _, tag in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], tag) == 0 then
    redis.call('HDEL', KEYS[1], tag)
    dropped = dropped + 1
  end
end
return dropped
"""


def _held_key(worker: str) -> str:
    return f"workers:held:{worker}"


def _alive_key(worker: str) -> str:
    return f"workers:alive:{worker}"


def hold(client: redis.Redis, worker: str, tag: str, job_id: str) -> None:
    """`worker` took the delivery `tag` (of job `job_id`) and has not acknowledged it yet."""
    pipe = client.pipeline()
    pipe.hset(_held_key(worker), tag, job_id)
    pipe.sadd(HOLDERS_KEY, worker)
    pipe.execute()


def mark_alive(client: redis.Redis, worker: str, heartbeat_s: float) -> None:
    """`worker` is alive for the next DEAD_AFTER_BEATS beats."""
    client.set(_alive_key(worker), 1, px=int(DEAD_AFTER_BEATS * heartbeat_s * 1000))


def leave(client: redis.Redis, worker: str) -> None:
    """A worker that stopped cleanly: what it still holds (nothing, normally) is handed back at once."""
    client.delete(_alive_key(worker))


def prune(client: redis.Redis, worker: str, unacked_key: str) -> int:
    """Forget the worker's tags that kombu no longer holds unacknowledged; how many were dropped."""
    return int(client.eval(PRUNE_SCRIPT, 2, _held_key(worker), unacked_key))


def dead_holders(client: redis.Redis) -> list[str]:
    """The workers that hold deliveries but are no longer alive."""
    holders = sorted(name.decode() for name in client.smembers(HOLDERS_KEY))
    pipe = client.pipeline(transaction=False)
    for worker in holders:
        pipe.exists(_alive_key(worker))
    return [worker for worker, alive in zip(holders, pipe.execute()) if not alive]


def take_held(client: redis.Redis, worker: str) -> dict[str, str]:
    """The dead `worker`'s tags (tag -> job id), taken off its list: one reaper hands each back."""
    pipe = client.pipeline()
    pipe.hgetall(_held_key(worker))
    pipe.delete(_held_key(worker))
    pipe.srem(HOLDERS_KEY, worker)
    held = pipe.execute()[0]
    return {tag.decode(): job_id.decode() for tag, job_id in held.items()}


def reaper_turn(client: redis.Redis, worker: str, heartbeat_s: float) -> bool:
    """Whether `worker` reaps this beat: one worker in the cluster at a time, the first to ask."""
    return bool(client.set(REAPER_LOCK_KEY, worker, nx=True, px=int(heartbeat_s * 1000)))
