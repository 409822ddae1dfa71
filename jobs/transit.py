"""Jobs whose message was lost (Redis broker), found so that they can be sent on again.

A job is in flight from the moment its message is sent (the web app queues it, or routing hands it to
its tier) until it ends (jobs.store's in-flight index). While it is in flight, its message waits in a
queue or, taken by a worker and not yet acknowledged (late acknowledgement), in kombu's `unacked`: a
message in neither is lost, and no acknowledgement or visibility timeout can bring it back:
- kombu's Redis transport takes a message with BRPOP and only then records it in `unacked`. A worker
  host that died while its BRPOP was waiting (cable cut: Redis never hears of it) receives the next
  message into a dead connection, and the message is gone.
- Replication is asynchronous: a failover loses the last writes, in any mix: a message just sent, a
  delivery's start, or the record of a job whose running delivery then stops (superseded, acknowledged)
  while the promoted replica still sees it queued or generating.

A job in flight whose last change of hands is older than `older_than_s` and whose message is in none of
its queues' lists and not in `unacked` is missing. The caller sends it on again (its stage's task, from
the record) once it was missing on two looks a beat apart (a message passes from a list to `unacked` in
microseconds); the delivery that starts first runs the job and fencing turns away any other.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Mapping, Optional

import redis

from jobs.queues import QUEUES, ROUTE_TASK, generation_task, redis_lists
from jobs.status import JobStatus, is_final
from jobs.store import IN_FLIGHT_KEY, job_key

OVERDUE_S = 5.0  # this long since the job last changed hands: look for its message
MISSING_KEY = "jobs:in_flight:missing"  # job id -> when its message was first found missing


def overdue(client: redis.Redis, older_than_s: float = OVERDUE_S) -> list[str]:
    """Jobs in flight that last changed hands more than `older_than_s` ago."""
    return [raw.decode() for raw in client.zrangebyscore(IN_FLIGHT_KEY, "-inf", time.time() - older_than_s)]


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
    """Jobs overdue in flight whose message is nowhere in the broker."""
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


def pending_message(client: redis.Redis, job_id: str) -> Optional[tuple[str, list, dict]]:
    """(task name, arguments, job) that carry the job on from the stage its record is in: its routing task
    while it is being routed (or not routed yet), its tier's generation task once routed; None (and out of
    the index) once it ended or its record expired."""
    status, request, routing = client.hmget(job_key(job_id), "status", "request", "routing")
    if status is None or is_final(status.decode()):
        forget(client, job_id)
        return None
    job = json.loads(request)
    routed = json.loads(routing) if routing and status.decode() != JobStatus.ROUTING.value else None
    return (*message_for(job, routed), job)


def sent_again(client: redis.Redis, job_id: str) -> None:
    """The job's message was sent again: it changed hands now."""
    client.zadd(IN_FLIGHT_KEY, {job_id: time.time()}, xx=True)


def forget(client: redis.Redis, job_id: str) -> None:
    client.zrem(IN_FLIGHT_KEY, job_id)
