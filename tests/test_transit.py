"""Jobs whose message was lost are sent on again (jobs.transit, tasks.reaper), on the
test Redis with the platform's own Celery configuration and real kombu messages; no worker runs."""
from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
from celery import Celery

from celeryconfig import celery_config
from helpers import job_store
from jobs import holdings, transit
from jobs.queues import ROUTE_TASK, ROUTING_QUEUE, generation_task, redis_lists, tier_queue
from jobs.status import JobStatus
from jobs.store import IN_FLIGHT_KEY
from monitoring import prometheus
from settings import load_settings
from tasks.reaper import Reaper

BEAT_S = 0.2


@pytest.fixture
def app():
    app = Celery("transit-test", set_as_current=False)
    app.conf.update(celery_config(load_settings({"REDIS_URL": os.environ["REDIS_URL"]}), worker=True))
    yield app
    app.close()


@pytest.fixture
def store():
    store = job_store()
    store.redis.delete(IN_FLIGHT_KEY, transit.MISSING_KEY)
    yield store
    store.redis.delete(IN_FLIGHT_KEY, transit.MISSING_KEY)


@pytest.fixture
def messages(app):
    """The messages this test leaves in the platform's queues are taken out again (no worker must run them)."""
    sent: list[str] = []
    yield sent
    redis = job_store().redis
    for queue in (ROUTING_QUEUE, tier_queue("small"), tier_queue("large")):
        for key in redis_lists(queue, app.conf.broker_transport_options):
            for raw in redis.lrange(key, 0, -1):
                if json.loads(raw)["headers"]["id"] in sent:
                    redis.lrem(key, 0, raw)


def queued_job(store, routing: dict | None = None, age_s: float = 60) -> str:
    """A job recorded as the web app records it, handed over `age_s` ago, whose message went nowhere."""
    job_id = uuid.uuid4().hex
    fields = {"routing": routing} if routing else {}
    store.create(job_id, {"prompt": "where did my message go", "max_tokens": 4, "priority": 7}, in_flight=True,
                 **fields)
    store.redis.zadd(IN_FLIGHT_KEY, {job_id: time.time() - age_s})
    return job_id


def waiting(app, queue: str) -> list[dict]:
    """(task id, task name, args, priority list) of the messages waiting in `queue`."""
    found = []
    for key in redis_lists(queue, app.conf.broker_transport_options):
        for raw in job_store().redis.lrange(key, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            found.append((message["headers"]["id"], message["headers"]["task"], args, key))
    return found


def reaper_turn(reaper: Reaper) -> int:
    """One reaping beat of `reaper` once its own beats have been healthy for a window."""
    reaper.beat()
    time.sleep(holdings.DEAD_AFTER_BEATS * BEAT_S)
    job_store().redis.delete(holdings.REAPER_LOCK_KEY)
    return reaper.beat()


def test_a_job_is_in_flight_from_its_handover_until_it_ends_stamped_at_each_change_of_hands(store):
    stamp = lambda job_id: store.redis.zscore(IN_FLIGHT_KEY, job_id)
    job_id = uuid.uuid4().hex
    store.create(job_id, {"prompt": "p"}, in_flight=True)
    assert stamp(job_id), "the web app records the job, then sends its message"
    store.redis.zadd(IN_FLIGHT_KEY, {job_id: 1})
    assert store.start_delivery(job_id, JobStatus.ROUTING) and stamp(job_id) > time.time() - 5, \
        "a delivery began: stamped now"
    store.redis.zadd(IN_FLIGHT_KEY, {job_id: 1})
    assert store.move(job_id, JobStatus.QUEUED, routing={"tier": "small"}) and stamp(job_id) > 1, \
        "routing hands it to its tier: a new message on its way"
    store.redis.zadd(IN_FLIGHT_KEY, {job_id: 1})
    assert store.start_delivery(job_id, JobStatus.GENERATING) and stamp(job_id) > 1, "stamped again"
    assert store.annotate(job_id, tokens_so_far=3) and stamp(job_id), "still in flight while it runs"
    assert store.move(job_id, JobStatus.SUCCEEDED) and stamp(job_id) is None, "it ended"
    cancelled = uuid.uuid4().hex
    store.create(cancelled, {"prompt": "p"}, in_flight=True)
    assert store.move(cancelled, JobStatus.CANCELLED) and stamp(cancelled) is None
    deleted = uuid.uuid4().hex
    store.create(deleted, {"prompt": "p"}, in_flight=True)
    store.delete(deleted)
    assert stamp(deleted) is None, "a submission that could not be sent leaves nothing behind"
    recorded_only = uuid.uuid4().hex
    store.create(recorded_only, {"prompt": "p"})
    assert store.start_delivery(recorded_only, JobStatus.GENERATING) and stamp(recorded_only) is None, \
        "only a record whose message is sent next is in flight"


def test_a_job_whose_message_waits_in_its_queue_or_is_taken_is_not_missing(app, store, messages):
    job_id = queued_job(store)
    app.send_task(ROUTE_TASK, args=[{"prompt": "p"}], task_id=job_id, priority=2)
    messages.append(job_id)
    options, unacked = app.conf.broker_transport_options, "unacked"
    assert transit.missing(store.redis, options, unacked) == set()
    with app.connection_for_read() as connection:
        taken = connection.SimpleQueue(ROUTING_QUEUE).get(timeout=5)  # now only in `unacked`
        assert job_id not in [message[0] for message in waiting(app, ROUTING_QUEUE)]
        assert transit.missing(store.redis, options, unacked) == set()
        taken.ack()
    assert transit.missing(store.redis, options, unacked) == {job_id}, "acknowledged, and the job has not ended"


def test_a_missing_message_is_confirmed_only_on_a_second_look_a_beat_later(app, store):
    job_id, fresh = queued_job(store), queued_job(store, age_s=0)
    options = app.conf.broker_transport_options
    assert transit.confirmed_missing(store.redis, options, "unacked", BEAT_S) == set(), "first look"
    assert transit.confirmed_missing(store.redis, options, "unacked", BEAT_S) == set(), "too soon after"
    time.sleep(BEAT_S)
    assert transit.confirmed_missing(store.redis, options, "unacked", BEAT_S) == {job_id}
    assert fresh not in transit.missing(store.redis, options, "unacked"), "handed over just now: not overdue"


def test_the_reaper_sends_a_lost_message_on_again_from_the_stage_the_record_is_in(app, store, messages):
    routed = {"tier": "large", "intent": "code_help", "rule": "matched"}
    unrouted, queued_for_large = queued_job(store), queued_job(store, routing=routed)
    # A job whose running delivery stopped and was acknowledged while the record still says it runs (the
    # promoted replica of a failover lost the writes in between): nothing would ever run it again.
    running = queued_job(store, routing={**routed, "tier": "small"})
    store.start_delivery(running, JobStatus.GENERATING)
    being_routed = queued_job(store, routing=routed)
    store.start_delivery(being_routed, JobStatus.ROUTING)  # routed once, routed again: its route task
    ended = queued_job(store)
    store.redis.hset(f"job:{ended}", "status", JobStatus.SUCCEEDED.value)  # its end, not its index entry
    for job_id in (running, being_routed, ended):
        store.redis.zadd(IN_FLIGHT_KEY, {job_id: time.time() - 60})
    messages += [unrouted, queued_for_large, running, being_routed]
    reaper = Reaper(app, store.redis, "transit@host", BEAT_S)
    lost = lambda queue: prometheus.recorded().registry.get_sample_value("llm_lost_messages_total",  # noqa: E731
                                                                          {"queue": queue}) or 0.0
    before = {queue: lost(queue) for queue in (ROUTING_QUEUE, tier_queue("small"), tier_queue("large"))}
    reaper_turn(reaper)  # the first look
    time.sleep(BEAT_S)
    store.redis.delete(holdings.REAPER_LOCK_KEY)
    assert reaper.beat() == 4
    assert {queue: lost(queue) - count for queue, count in before.items()} == \
        {ROUTING_QUEUE: 2, tier_queue("small"): 1, tier_queue("large"): 1}, "counted per queue"
    routing = {m[0]: m for m in waiting(app, ROUTING_QUEUE)}
    large = {m[0]: m for m in waiting(app, tier_queue("large"))}
    small = {m[0]: m for m in waiting(app, tier_queue("small"))}
    assert routing[unrouted][1] == ROUTE_TASK and routing[unrouted][2][0]["prompt"] == "where did my message go"
    assert large[queued_for_large][1] == generation_task("large") and large[queued_for_large][2][1] == routed
    assert small[running][1] == generation_task("small"), "a running job goes on at its tier"
    assert routing[being_routed][1] == ROUTE_TASK
    assert routing[unrouted][3].endswith("\x06\x162"), "at the job's priority (API 7 is kombu's 2)"
    assert ended not in routing and store.redis.zscore(IN_FLIGHT_KEY, ended) is None
    assert store.redis.zscore(IN_FLIGHT_KEY, unrouted) > time.time() - 5, "in flight again, from now"
    assert reaper.beat() == 0, "sent once: its message is in its queue now"


def test_a_task_that_met_an_outage_is_sent_on_from_the_record_not_as_the_task_it_was(app, store, messages):
    """A small delivery moved its job to large (the record says so), then its replacement's publish failed:
    tasks.delivery sends the job on from the record, to the large tier, as the reaper would."""
    from tasks.delivery import send_on

    escalated = {"tier": "large", "intent": "casual", "rule": "matched", "fallback": {"from": "small", "to": "large"}}
    job_id = queued_job(store, routing=escalated)
    messages.append(job_id)
    assert send_on(app, store.redis, job_id) == tier_queue("large")
    assert [m[1] for m in waiting(app, tier_queue("large")) if m[0] == job_id] == [generation_task("large")]
    assert not [m for m in waiting(app, tier_queue("small")) if m[0] == job_id]
    store.move(job_id, JobStatus.SUCCEEDED)
    assert send_on(app, store.redis, job_id) is None, "an ended job is not sent on"
