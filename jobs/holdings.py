"""Which broker deliveries each worker holds, and which workers are dead, so that a dead worker's jobs
go back to their queues within seconds rather than after the broker's visibility timeout.

With Redis as the broker, a message a worker took stays in kombu's `unacked` hash until the worker
acknowledges it; only the visibility timeout (longer than the longest time limit) hands it back when
the worker dies. So each worker process lists the delivery tags it receives (`hold`) and keeps a key
alive while it runs (`mark_alive`, every beat, draining included). A worker whose key expired is
dead: `dead_holders` names it and a reaper (tasks.reaper) hands its tags back through kombu. A tag
already acknowledged is no longer in `unacked`, so handing it back does nothing: the lists need no
bookkeeping on acknowledgement, only a prune now and then.
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


def hold(client: redis.Redis, worker: str, tag: str, job_id: str, heartbeat_s: float) -> None:
    """`worker` took the delivery `tag` (of job `job_id`) and has not acknowledged it yet. A worker that
    has not beaten yet counts as alive from its first delivery on."""
    pipe = client.pipeline()
    pipe.hset(_held_key(worker), tag, job_id)
    pipe.sadd(HOLDERS_KEY, worker)
    pipe.set(_alive_key(worker), 1, px=_alive_ms(heartbeat_s), nx=True)
    pipe.execute()


def mark_alive(client: redis.Redis, worker: str, heartbeat_s: float) -> None:
    """`worker` is alive for the next DEAD_AFTER_BEATS beats."""
    client.set(_alive_key(worker), 1, px=_alive_ms(heartbeat_s))


def _alive_ms(heartbeat_s: float) -> int:
    return int(DEAD_AFTER_BEATS * heartbeat_s * 1000)


def leave(client: redis.Redis, worker: str) -> None:
    """A worker that stopped cleanly holds nothing: kombu put back what it had not started."""
    pipe = client.pipeline()
    pipe.delete(_alive_key(worker), _held_key(worker))
    pipe.srem(HOLDERS_KEY, worker)
    pipe.execute()


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


def held(client: redis.Redis, worker: str) -> dict[str, str]:
    """The deliveries `worker` holds: tag -> job id."""
    return {tag.decode(): job_id.decode() for tag, job_id in client.hgetall(_held_key(worker)).items()}


def release(client: redis.Redis, worker: str, tag: str) -> None:
    """The delivery `tag` is no longer `worker`'s (handed back)."""
    client.hdel(_held_key(worker), tag)


def forget(client: redis.Redis, worker: str) -> None:
    """A dead worker whose deliveries were all handed back leaves the holders."""
    pipe = client.pipeline()
    pipe.delete(_held_key(worker))
    pipe.srem(HOLDERS_KEY, worker)
    pipe.execute()


def reaper_turn(client: redis.Redis, worker: str, heartbeat_s: float) -> bool:
    """Whether `worker` reaps this beat: one worker in the cluster at a time, the first to ask."""
    return bool(client.set(REAPER_LOCK_KEY, worker, nx=True, px=int(heartbeat_s * 1000)))
