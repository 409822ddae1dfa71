"""Jobs whose message was lost on its way to a worker (Redis broker), found so that they can be sent again.

A job is in transit from the moment its message is sent (the web app queues it, or routing hands it to
its tier) until a delivery of it starts (jobs.store's in-transit index). Two ways to lose the message
that no acknowledgement can catch:
- kombu's Redis transport takes a message with BRPOP and only then records it in `unacked`. A worker
  host that died while its BRPOP was waiting (cable cut: Redis never hears of it) receives the next
  message into a dead connection, and the message is gone.
- Replication is asynchronous: a failover can lose a message sent in the last moment.

A job in transit for longer than `older_than_s` whose message is in none of its queues' lists and not
in `unacked` is missing. The caller sends it again once it was missing on two looks a beat apart (a
message passes from a list to `unacked` in microseconds); the delivery that starts first runs the job
and fencing turns away any other.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Mapping, Optional

import redis

from jobs.queues import QUEUES, ROUTE_TASK, generation_task, redis_lists
from jobs.status import JobStatus
from jobs.store import IN_TRANSIT_KEY, job_key

OVERDUE_S = 5.0  # queued this long without a delivery: look for its message
MISSING_KEY = "jobs:in_transit:missing"  # job id -> when its message was first found missing


def overdue(client: redis.Redis, older_than_s: float = OVERDUE_S) -> list[str]:
    """Jobs handed to the broker more than `older_than_s` ago whose delivery has not begun."""
    return [raw.decode() for raw in client.zrangebyscore(IN_TRANSIT_KEY, "-inf", time.time() - older_than_s)]


def messages_present(client: redis.Redis, transport_options: Mapping, unacked_key: str,
                     queues: Iterable[str] = QUEUES) -> set[str]:
    """The task ids of every message waiting in `queues` (every priority list) or taken and not acknowledged."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in redis_lists(queue, transport_options):
            pipe.lrange(key, 0, -1)
    pipe.hvals(unacked_key)
    *lists, unacked = pipe.execute()
    ids = {_task_id(raw) for messages in lists for raw in messages}
    ids.update(_task_id(json.loads(raw)[0]) for raw in unacked)  # kombu keeps [message, exchange, routing key]
    return ids


def _task_id(message) -> str:
    body = json.loads(message) if isinstance(message, (bytes, str)) else message
    return str((body.get("headers") or {}).get("id", ""))


def missing(client: redis.Redis, transport_options: Mapping, unacked_key: str,
            older_than_s: float = OVERDUE_S) -> set[str]:
    """Jobs overdue in transit whose message is nowhere in the broker."""
    late = overdue(client, older_than_s)
    if not late:
        return set()
    return set(late) - messages_present(client, transport_options, unacked_key)


def confirmed_missing(client: redis.Redis, transport_options: Mapping, unacked_key: str, apart_s: float,
                      older_than_s: float = OVERDUE_S) -> set[str]:
    """Jobs whose message is missing now and was already missing at least `apart_s` ago (whichever
    process looked then: the looks are kept in Redis)."""
    now, found = time.time(), missing(client, transport_options, unacked_key, older_than_s)
    seen = {raw.decode(): float(at) for raw, at in client.hgetall(MISSING_KEY).items()}
    pipe = client.pipeline()
    pipe.delete(MISSING_KEY)
    if found:
        pipe.hset(MISSING_KEY, mapping={job_id: seen.get(job_id, now) for job_id in found})
    pipe.execute()
    return {job_id for job_id in found if now - seen.get(job_id, now) >= apart_s}


def message_for(job: dict, routing: Optional[dict]) -> tuple[str, list]:
    """The task name and arguments that carry a queued job on: its routing task, or its tier's
    generation task once `routing` is decided (the web app sends these; so does a job sent again)."""
    return (ROUTE_TASK, [job]) if not routing else (generation_task(routing["tier"]), [job, routing])


def queued_message(client: redis.Redis, job_id: str) -> Optional[tuple[str, list, dict]]:
    """(task name, arguments, job) to send the job on with, while it is still queued; None (and out of
    the index) once a delivery of it began, it ended or its record expired."""
    status, request, routing = client.hmget(job_key(job_id), "status", "request", "routing")
    if status is None or status.decode() != JobStatus.QUEUED.value:
        forget(client, job_id)
        return None
    job = json.loads(request)
    return (*message_for(job, json.loads(routing) if routing else None), job)


def sent_again(client: redis.Redis, job_id: str) -> None:
    """The job's message was sent again: it is in transit from now."""
    client.zadd(IN_TRANSIT_KEY, {job_id: time.time()}, xx=True)


def forget(client: redis.Redis, job_id: str) -> None:
    client.zrem(IN_TRANSIT_KEY, job_id)
