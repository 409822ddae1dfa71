"""A dead worker's deliveries handed back through kombu (tasks.reaper, jobs.holdings), on the test Redis
with real kombu messages: no worker runs, the dead one is a name that stopped beating."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import uuid
from typing import Iterator

import pytest
from celery import Celery
from kombu import Exchange, Queue

from helpers import job_store
from jobs import holdings
from jobs.queues import redis_lists
from tasks.reaper import keep_alive

BEAT_S = 0.2


@pytest.fixture
def app():
    app = Celery("reaper-test", broker=os.environ["REDIS_URL"], set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def queue(app):
    name = f"reaper-test-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    yield queue
    with app.connection_for_write() as connection:
        queue.bind(connection.default_channel).delete()


@contextlib.contextmanager
def taken(app, queue: Queue, body: dict) -> Iterator[str]:
    """Publish `body` and take it as a worker does: it stays in kombu's `unacked` hash while the taker's
    connection is open (closing it cleanly would hand the message back, as a warm shutdown does)."""
    with app.connection_for_write() as connection:
        connection.Producer().publish(body, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue])
    with app.connection_for_read() as connection:
        yield connection.SimpleQueue(queue).get(timeout=5).delivery_tag


def waiting(queue: Queue) -> list[dict]:
    """The bodies of the messages waiting in `queue`, read off its Redis lists (every priority)."""
    raw = [item for key in redis_lists(queue.name, {}) for item in job_store().redis.lrange(key, 0, -1)]
    return [json.loads(base64.b64decode(json.loads(item)["body"])) for item in raw]


def test_a_dead_workers_unacknowledged_delivery_goes_back_to_its_queue(app, queue):
    redis = job_store().redis
    with taken(app, queue, {"job": "a"}) as tag:
        assert redis.hexists("unacked", tag) and waiting(queue) == []
        holdings.hold(redis, "dead@host", tag, "a")  # it never beat, or its key expired: dead
        redis.delete(holdings.REAPER_LOCK_KEY)
        assert keep_alive(app, redis, "live@host", BEAT_S) == 1
        assert not redis.hexists("unacked", tag)
        assert waiting(queue) == [{"job": "a"}], "back in its queue, once"
    assert "dead@host" not in holdings.dead_holders(redis)


def test_a_live_workers_deliveries_stay_with_it(app, queue):
    redis = job_store().redis
    with taken(app, queue, {"job": "b"}) as tag:
        holdings.hold(redis, "busy@host", tag, "b")
        holdings.mark_alive(redis, "busy@host", heartbeat_s=60)
        redis.delete(holdings.REAPER_LOCK_KEY)
        assert keep_alive(app, redis, "live@host", BEAT_S) == 0
        assert redis.hexists("unacked", tag) and waiting(queue) == []
        holdings.leave(redis, "busy@host")  # it left without acknowledging: what it holds goes back
        redis.delete(holdings.REAPER_LOCK_KEY)
        assert keep_alive(app, redis, "live@host", BEAT_S) == 1
        assert waiting(queue) == [{"job": "b"}]


def test_acknowledged_deliveries_are_pruned_and_never_handed_back(app, queue):
    redis = job_store().redis
    with app.connection_for_write() as connection:
        connection.Producer().publish({"job": "c"}, exchange=queue.exchange, routing_key=queue.routing_key,
                                      declare=[queue])
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(queue).get(timeout=5)
        holdings.hold(redis, "tidy@host", message.delivery_tag, "c")
        message.ack()
    assert holdings.prune(redis, "tidy@host", "unacked") == 1
    holdings.hold(redis, "gone@host", message.delivery_tag, "c")  # acknowledged, then its worker died
    redis.delete(holdings.REAPER_LOCK_KEY)
    assert keep_alive(app, redis, "live@host", BEAT_S) == 0
    assert waiting(queue) == []


def test_one_worker_reaps_per_beat():
    redis = job_store().redis
    redis.delete(holdings.REAPER_LOCK_KEY)
    assert holdings.reaper_turn(redis, "first@host", heartbeat_s=30)
    assert not holdings.reaper_turn(redis, "second@host", heartbeat_s=30)
    redis.delete(holdings.REAPER_LOCK_KEY)
