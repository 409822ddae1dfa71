"""Queue depth over every priority, as backpressure, metrics and health read it (jobs.queues).

Messages go to a queue of the test's own that no worker consumes, and are removed afterwards.
"""
from __future__ import annotations

import os
import re
import socket
import time
import uuid

import pytest

from helpers import app_with, broker, job_store
from jobs.queues import KOMBU_DEFAULT_PRIORITY_STEPS, broker_priority, queue_depths, redis_lists
from monitoring import metrics

API_PRIORITIES = range(10)


@pytest.fixture()
def filled_queue():
    """A queue of its own holding one message per API priority 0..9; its Redis lists go afterwards."""
    queue = f"tests-depth-{uuid.uuid4().hex[:12]}"
    celery = broker().celery
    options = celery.conf.broker_transport_options
    try:
        for priority in API_PRIORITIES:
            celery.send_task("tests.depth.noop", args=[], queue=queue, priority=broker_priority(priority))
        yield queue, options
    finally:
        client = job_store().redis
        client.delete(*redis_lists(queue, options), *redis_lists(queue, {}), f"_kombu.binding.{queue}",
                     f"_kombu.binding_permanent.{queue}")


def test_the_broker_keeps_one_list_per_priority():
    options = broker().celery.conf.broker_transport_options
    assert list(options["priority_steps"]) == list(range(10))
    assert sorted(broker_priority(p) for p in API_PRIORITIES) == list(range(10))
    assert broker_priority(9) == 0, "API priority 9 is the most urgent, kombu's 0"


def test_queue_depth_counts_every_priority(filled_queue):
    queue, options = filled_queue
    client = job_store().redis
    assert queue_depths(client, options, [queue]) == {queue: 10}
    # The messages really are spread over the lists: each priority step holds one.
    assert [client.llen(key) for key in redis_lists(queue, options)] == [1] * 10
    # kombu's default steps (0, 3, 6, 9) know only four of those lists and miss the rest.
    assert tuple(KOMBU_DEFAULT_PRIORITY_STEPS) == (0, 3, 6, 9)
    assert queue_depths(client, {}, [queue])[queue] < 10


def test_each_queue_gets_its_own_depth_from_one_reading(filled_queue):
    """The depths are summed in Redis, queue by queue, from one list of keys: each sum must stop at its queue."""
    queue, options = filled_queue
    client = job_store().redis
    other, empty = f"{queue}-other", f"{queue}-empty"
    lists = redis_lists(other, options)
    try:
        client.rpush(lists[0], "first", "second")
        client.rpush(lists[-1], "last priority")
        assert queue_depths(client, options, [other, queue, empty]) == {other: 3, queue: 10, empty: 0}
        assert queue_depths(client, options, [empty, queue]) == {empty: 0, queue: 10}
    finally:
        client.delete(*lists)


def test_the_web_broker_reads_the_same_depths():
    store = job_store()
    expected = queue_depths(store.redis, broker().celery.conf.broker_transport_options)
    assert broker().queue_depths(store) == expected


def test_queue_depth_gauge_reports_every_priority(filled_queue):
    from monitoring.queues import sample_once

    queue, options = filled_queue
    assert metrics.client() is not None, "conftest turns StatsD metrics on"
    prefix = os.environ["STATSD_PREFIX"]
    wanted = f"{prefix}.queue.{metrics.part(queue)}.depth"
    # Only one socket may bind the session's StatsD port: this one lives for this test only.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((os.environ["STATSD_HOST"], int(os.environ["STATSD_PORT"])))
        sock.settimeout(0.2)
        assert sample_once(job_store().redis, options, [queue]) == {queue: 10}
        values = []
        deadline = time.monotonic() + 5
        while not values and time.monotonic() < deadline:
            try:
                packet = sock.recv(65535).decode()
            except socket.timeout:
                continue
            values += [line.split(":", 1)[1] for line in packet.splitlines() if line.split(":", 1)[0] == wanted]
    assert values == ["10|g"], f"no gauge {wanted}:10|g arrived (got {values})"


def test_metric_names_keep_only_safe_characters():
    assert metrics.part("small-queue") == "small-queue"
    assert metrics.part("a.b:c|d@e f") == "a_b_c_d_e_f"
    assert metrics.part("") == "none"


def test_backpressure_refuses_with_the_same_reading():
    app = app_with(routing_max_depth=0)
    client = app.test_client()
    store = job_store()
    options = broker().celery.conf.broker_transport_options
    before = queue_depths(store.redis, options)["routing"]
    response = client.post("/v1/jobs", json={"prompt": "refused by backpressure", "max_tokens": 4, "cache": False})
    after = queue_depths(store.redis, options)["routing"]
    assert response.status_code == 429, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "queue_full" and error["queue"] == "routing"
    assert response.headers["Retry-After"] == str(app.extensions["llm_platform"].settings.queue_retry_after_s)
    if before == after:  # nobody else touched the routing queue meanwhile
        held = int(re.search(r"holds (\d+) jobs", error["message"]).group(1))
        assert held == before, "backpressure read the queue differently from jobs.queues"
    assert after == before, "a refused job must not be queued"


def test_submitting_a_task_subscribes_to_no_result():
    """The web app reads answers from job records: a submission must not listen for its Celery result
    (with Redis as result backend, that was a pub/sub subscription per request, on a connection of its
    own under gevent)."""
    queue = f"tests-results-{uuid.uuid4().hex[:12]}"
    celery, client = broker().celery, job_store().redis
    try:
        task_id = celery.send_task("tests.depth.noop", args=[], queue=queue).id
        assert client.pubsub_channels(f"celery-task-meta-{task_id}") == []
    finally:
        options = celery.conf.broker_transport_options
        client.delete(*redis_lists(queue, options), f"_kombu.binding.{queue}")
