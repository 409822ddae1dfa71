"""A dead worker's deliveries handed back through kombu (tasks.reaper, jobs.holdings), on the test Redis
with real kombu messages: no worker runs, the dead one is a name that stopped beating."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import uuid
from typing import Iterator

import pytest
from celery import Celery
from kombu import Exchange, Queue

from helpers import job_store
from jobs import holdings, transit
from jobs.queues import redis_lists
from jobs.store import IN_FLIGHT_KEY
from tasks.reaper import Reaper

BEAT_S = 0.2


@pytest.fixture
def app():
    app = Celery("reaper-test", broker=os.environ["REDIS_URL"], set_as_current=False)
    yield app
    app.close()


@pytest.fixture(autouse=True)
def nothing_in_flight():
    """The reaper also sends on jobs in flight whose message is lost (tests/test_transit.py): none here."""
    redis = job_store().redis
    redis.delete(IN_FLIGHT_KEY, transit.MISSING_KEY)
    yield
    redis.delete(IN_FLIGHT_KEY, transit.MISSING_KEY)


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


def _waiting_messages(queue: Queue) -> list[dict]:
    return [json.loads(item) for key in redis_lists(queue.name, {}) for item in job_store().redis.lrange(key, 0, -1)]


def waiting(queue: Queue) -> list[dict]:
    """The bodies of the messages waiting in `queue`, read off its Redis lists (every priority)."""
    return [json.loads(base64.b64decode(message["body"])) for message in _waiting_messages(queue)]


def waiting_tags(queue: Queue) -> list[str]:
    return [message["properties"]["delivery_tag"] for message in _waiting_messages(queue)]


def reaping(reaper: Reaper) -> int:
    """What `reaper` hands back once its own beats have been healthy for a dead-after window."""
    reaper.beat()
    time.sleep(holdings.DEAD_AFTER_BEATS * BEAT_S)
    job_store().redis.delete(holdings.REAPER_LOCK_KEY)  # whatever an earlier beat left
    return reaper.beat()


def dead_holder(tag: str, job_id: str) -> str:
    """A holder that took `tag` and stopped beating at once."""
    name = f"dead@host/{uuid.uuid4().hex[:6]}"
    holdings.hold(job_store().redis, name, tag, job_id, heartbeat_s=0.001)
    return name


def test_a_dead_workers_unacknowledged_delivery_goes_back_to_its_queue_under_a_new_tag(app, queue):
    redis = job_store().redis
    with taken(app, queue, {"job": "a"}) as tag:
        assert redis.hexists("unacked", tag) and waiting(queue) == []
        dead = dead_holder(tag, "a")
        assert reaping(Reaper(app, redis, "live@host", BEAT_S)) == 1
        assert not redis.hexists("unacked", tag)
        assert waiting(queue) == [{"job": "a"}], "back in its queue, once"
        assert waiting_tags(queue) != [tag], "under a new tag: the dead one's late ack cannot touch it"
        assert dead not in holdings.dead_holders(redis)


def test_a_worker_restarted_under_the_same_name_does_not_keep_the_dead_ones_deliveries(app, queue):
    """supervisord and container runtimes restart a worker under its node name: the holder is the process."""
    redis = job_store().redis
    with taken(app, queue, {"job": "r"}) as tag:
        before, after = Reaper(app, redis, "small@host", BEAT_S), Reaper(app, redis, "small@host", BEAT_S)
        assert before.holder != after.holder
        holdings.hold(redis, before.holder, tag, "r", heartbeat_s=0.001)  # then it was killed
        assert reaping(after) == 1 and waiting(queue) == [{"job": "r"}]


def test_a_live_workers_deliveries_stay_with_it_and_a_clean_leave_hands_back_nothing(app, queue):
    redis = job_store().redis
    with taken(app, queue, {"job": "b"}) as tag:
        busy = Reaper(app, redis, "busy@host", 60)
        holdings.hold(redis, busy.holder, tag, "b", heartbeat_s=60)  # alive from its first delivery on
        assert reaping(Reaper(app, redis, "live@host", BEAT_S)) == 0
        assert redis.hexists("unacked", tag) and waiting(queue) == []
        busy.leave()  # kombu puts back what a cleanly stopping worker holds; the reaper must not
        assert busy.holder not in holdings.dead_holders(redis)


def test_acknowledged_deliveries_are_pruned_and_never_handed_back(app, queue):
    redis = job_store().redis
    with app.connection_for_write() as connection:
        connection.Producer().publish({"job": "c"}, exchange=queue.exchange, routing_key=queue.routing_key,
                                      declare=[queue])
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(queue).get(timeout=5)
        holdings.hold(redis, "tidy@host", message.delivery_tag, "c", heartbeat_s=60)
        message.ack()
    assert holdings.prune(redis, "tidy@host", "unacked") == 1
    dead_holder(message.delivery_tag, "c")  # acknowledged, then its worker died
    assert reaping(Reaper(app, redis, "live@host", BEAT_S)) == 0
    assert waiting(queue) == []


def test_a_reaper_whose_own_beats_just_came_back_waits_a_window_before_reaping(app, queue):
    """After a Redis outage every key may have lapsed: the first worker back must not take the others' jobs."""
    redis = job_store().redis
    with taken(app, queue, {"job": "d"}) as tag:
        dead_holder(tag, "d")
        time.sleep(0.05)
        redis.delete(holdings.REAPER_LOCK_KEY)
        assert Reaper(app, redis, "back@host", BEAT_S).beat() == 0, "not before its own window"


def test_one_worker_reaps_per_beat():
    redis = job_store().redis
    redis.delete(holdings.REAPER_LOCK_KEY)
    assert holdings.reaper_turn(redis, "first@host", heartbeat_s=30)
    assert not holdings.reaper_turn(redis, "second@host", heartbeat_s=30)
    redis.delete(holdings.REAPER_LOCK_KEY)
