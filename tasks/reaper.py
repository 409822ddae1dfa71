"""Hands a dead worker's jobs back to their queues within seconds (Redis broker).

Each worker process has a `Reaper`. It records the deliveries the process receives (`hold`, on
Celery's `task_received`) and, on each housekeeping beat (`beat`), marks the process alive, prunes
what it acknowledged and, when it is the beat's reaper, hands back what dead processes held
(jobs.holdings). The job then runs again from the start: tasks.delivery counts the delivery and
fences off the dead one's writes, and readers drop what they had at the new `start`. The beat's reaper
also sends on again the jobs whose message was lost (jobs.transit).

Handing back is kombu's `restore_by_tag` (what its visibility timeout does: the message leaves
`unacked` for the front of its queue, at its priority, marked redelivered), with one change: the
message goes back under a new delivery tag. A worker that was only paused acknowledges its old tag
late, and kombu's acknowledgement deletes that tag's `unacked` entry, which would otherwise now be
the entry of whichever worker took the message next.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Optional

import redis
from celery import Celery
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from jobs import holdings, transit
from monitoring import prometheus
from tasks.delivery import send_on

log = logging.getLogger(__name__)
REDIS_BROKERS = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def uses_redis_broker(app: Celery) -> bool:
    """Only the Redis broker needs a reaper: RabbitMQ requeues a lost consumer's messages itself."""
    return app.conf.broker_url.startswith(REDIS_BROKERS)


class Reaper:
    """This worker process's deliveries and its share of handing back dead processes' ones.

    The holder name is the worker's node name, its pid and a token of this start: a worker that
    supervisord or a container runtime restarts under the same node name is a new holder, and what
    the dead process held is still handed back.
    """

    def __init__(self, app: Celery, client: redis.Redis, worker: str, heartbeat_s: float) -> None:
        self.app, self.client, self.heartbeat_s = app, client, heartbeat_s
        self.holder = f"{worker}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._healthy_since: Optional[float] = None

    def hold(self, request) -> None:
        """Celery's `task_received`: this process holds the message until it acknowledges it."""
        tag = getattr(request.message, "delivery_tag", None)
        if tag:
            holdings.hold(self.client, self.holder, str(tag), request.id, self.heartbeat_s)

    def beat(self) -> int:
        """One housekeeping beat; how many deliveries of dead processes it handed back.

        This process reaps only after its own beats have reached Redis for a whole dead-after
        window: after a Redis outage or failover every process's key may have lapsed, and the first
        one back must not take the running jobs of all the others.
        """
        try:
            holdings.mark_alive(self.client, self.holder, self.heartbeat_s)
            holdings.prune(self.client, self.holder, self._unacked_key())
        except redis.RedisError:
            self._healthy_since = None
            raise
        now = time.monotonic()
        self._healthy_since = self._healthy_since or now
        if now - self._healthy_since < holdings.DEAD_AFTER_BEATS * self.heartbeat_s:
            return 0
        if not holdings.reaper_turn(self.client, self.holder, self.heartbeat_s):
            return 0
        handed_back = sum(self._hand_back(dead) for dead in holdings.dead_holders(self.client))
        return handed_back + self._send_missing_again()

    def leave(self) -> None:
        """A clean stop: kombu put back what this process had not started; it holds nothing now."""
        holdings.leave(self.client, self.holder)

    def _hand_back(self, dead: str) -> int:
        """Restore what `dead` held and had not acknowledged; how many deliveries that was."""
        held = holdings.held(self.client, dead)
        restored = []
        with self.app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            for tag, job_id in held.items():
                if _restore_with_new_tag(qos, tag):
                    restored.append(job_id)
                holdings.release(self.client, dead, tag)  # one at a time: a failure leaves the rest listed
        holdings.forget(self.client, dead)
        if restored:
            log.warning("worker %s stopped beating; handed back %d of its jobs: %s", dead, len(restored),
                        ", ".join(restored))
        return len(restored)

    def _send_missing_again(self) -> int:
        """Send again the jobs whose message was missing on this look and on one a beat or more ago; how many."""
        options = self.app.conf.broker_transport_options
        confirmed = transit.confirmed_missing(self.client, options, self._unacked_key(), self.heartbeat_s)
        sent = []
        for job_id in sorted(confirmed):
            queue = send_on(self.app, self.client, job_id)
            if queue is not None:
                prometheus.lost_message(queue)
                sent.append(job_id)
        if sent:
            log.warning("sent again %d jobs whose message was lost: %s", len(sent),
                        ", ".join(sent))
        return len(sent)

    def _unacked_key(self) -> str:
        return self.app.conf.broker_transport_options.get("unacked_key", "unacked")


def _restore_with_new_tag(qos, tag: str) -> bool:
    """kombu's `QoS.restore_by_tag` (its private steps, kombu pinned), putting the message back under a new
    delivery tag; False when it was not unacknowledged any more (acknowledged, or restored already)."""
    restored: list[bool] = []  # the last try's (the transaction retries when `unacked` changed under it)

    def restore(pipe) -> None:
        raw = pipe.hget(qos.unacked_key, tag)
        pipe.multi()
        qos._remove_from_indices(tag, pipe)
        restored[:] = [bool(raw)]
        if raw:
            message, exchange, routing_key = loads(bytes_to_str(raw))
            message["properties"]["delivery_tag"] = str(uuid.uuid4())
            qos.channel._do_restore_message(message, exchange, routing_key, pipe, False)

    with qos.channel.conn_or_acquire() as client:
        client.transaction(restore, qos.unacked_key)
    return restored == [True]


_reapers: dict[int, Reaper] = {}
_reapers_lock = threading.Lock()


def process_reaper(app: Celery, client: redis.Redis, worker: str, heartbeat_s: float) -> Reaper:
    """This process's reaper, made on first use (the first delivery or the first beat, whichever is first)."""
    with _reapers_lock:
        reaper = _reapers.get(os.getpid())
        if reaper is None:
            reaper = _reapers[os.getpid()] = Reaper(app, client, worker, heartbeat_s)
        return reaper
