"""The probes without workers: /health is liveness only; /ready reads worker presence from Redis."""
from __future__ import annotations

import time

import pytest
import redis

from conftest import TEST_REDIS_URL
from helpers import app_with
from jobs import presence
from jobs.queues import QUEUES

BEAT_S = 0.5
# A Redis DB of these tests' own (the one below the suite's): the session's real workers beat into
# the suite's DB, and these tests need presence as if no worker ran.
BASE, _, DB = TEST_REDIS_URL.rpartition("/")
PROBES_REDIS_URL = f"{BASE}/{int(DB) - 1}"


@pytest.fixture()
def no_presence():
    client = redis.Redis.from_url(PROBES_REDIS_URL)
    keys = [f"workers:live:{queue}" for queue in QUEUES]
    client.delete(*keys)
    yield client
    client.delete(*keys)


def test_health_is_liveness_and_touches_no_redis():
    client = app_with(redis_url="redis://127.0.0.1:1/0").test_client()  # nothing listens on port 1
    response = client.get("/health")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json()["redis"] is False


def test_ready_needs_a_live_worker_on_every_queue(no_presence):
    client = app_with(redis_url=PROBES_REDIS_URL, worker_heartbeat_s=BEAT_S).test_client()
    body = client.get("/ready").get_json()
    assert body["status"] == "not_ready" and body["workers"] == dict.fromkeys(QUEUES, 0)
    presence.beat(no_presence, "w1@test", {"routing", "small-queue"}, set(), BEAT_S)
    response = client.get("/ready")
    assert response.status_code == 503 and "large-queue" in response.get_json()["error"]["message"]
    presence.beat(no_presence, "w2@host-b", {"large-queue", "small-queue"}, set(), BEAT_S)
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "redis": True,
                                   "workers": {"routing": 1, "small-queue": 2, "large-queue": 1},
                                   "hosts": {"routing": {"test": ["w1@test"]},
                                             "small-queue": {"host-b": ["w2@host-b"], "test": ["w1@test"]},
                                             "large-queue": {"host-b": ["w2@host-b"]}}}


def test_a_worker_that_stops_beating_for_a_queue_drops_out(no_presence):
    """A worker whose engine stalls leaves its queue out of the beat (tasks.lifecycle); one that dies
    stops beating: either way the queue's worker is gone after three beats."""
    client = app_with(redis_url=PROBES_REDIS_URL, worker_heartbeat_s=BEAT_S).test_client()
    presence.beat(no_presence, "w1@test", set(QUEUES), set(), BEAT_S)
    assert client.get("/ready").status_code == 200
    presence.beat(no_presence, "w1@test", {"routing", "large-queue"}, set(QUEUES), BEAT_S)  # left small-queue
    assert client.get("/ready").get_json()["workers"]["small-queue"] == 0
    deadline = time.monotonic() + 10 * BEAT_S
    while client.get("/ready").get_json()["workers"]["routing"]:  # no more beats: stale after three
        assert time.monotonic() < deadline, "a silent worker stayed live"
        time.sleep(BEAT_S / 5)
    assert client.get("/ready").status_code == 503
