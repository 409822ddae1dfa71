"""Hands a dead worker's jobs back to their queues within seconds (Redis broker).

Every worker records the deliveries it receives (`record_delivery`, on Celery's `task_received`)
and, on each housekeeping beat, marks itself alive, prunes what it acknowledged and, when it is
the beat's reaper, hands back what dead workers held (jobs.holdings). Handing back is kombu's own
`restore_by_tag`, as its visibility timeout does: the message leaves `unacked` and goes to the
front of its queue, at its priority, marked redelivered. The job then runs again from the start
(tasks.delivery counts the delivery; readers drop what they had at the new `start`).
"""
from __future__ import annotations

import logging

import redis
from celery import Celery

from jobs import holdings

log = logging.getLogger(__name__)


def uses_redis_broker(app: Celery) -> bool:
    return app.conf.broker_url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def unacked_key(app: Celery) -> str:
    return app.conf.broker_transport_options.get("unacked_key", "unacked")


def record_delivery(client: redis.Redis, worker: str, request) -> None:
    """Celery's `task_received`: the worker holds this message until it acknowledges it."""
    tag = getattr(request.message, "delivery_tag", None)
    if tag:
        holdings.hold(client, worker, str(tag), request.id)


def keep_alive(app: Celery, client: redis.Redis, worker: str, heartbeat_s: float) -> int:
    """One housekeeping beat: alive, pruned, and the dead workers' deliveries handed back when this
    worker reaps this beat; how many deliveries it handed back."""
    holdings.mark_alive(client, worker, heartbeat_s)
    holdings.prune(client, worker, unacked_key(app))
    if not holdings.reaper_turn(client, worker, heartbeat_s):
        return 0
    return sum(hand_back(app, client, dead) for dead in holdings.dead_holders(client))


def hand_back(app: Celery, client: redis.Redis, dead: str) -> int:
    """Restore what `dead` held and had not acknowledged; how many deliveries that was."""
    held = holdings.take_held(client, dead)
    if not held:
        return 0
    unacked = unacked_key(app)
    pending = [tag for tag in held if client.hexists(unacked, tag)]
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag in pending:
            qos.restore_by_tag(tag)
    if pending:
        log.warning("worker %s stopped beating; handed back %d of its jobs: %s", dead, len(pending),
                    ", ".join(held[tag] for tag in pending))
    return len(pending)
