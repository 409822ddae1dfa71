"""Fencing (JobStore.start_delivery): once a later delivery of a job has begun, the earlier one can
neither move the job, nor note progress, nor write to its stream; a delivery that may not run the job
takes no number; writers outside a delivery (a cancel) are not fenced. On the test Redis, with the
real scripts."""
from __future__ import annotations

import threading
import time
import uuid

from helpers import job_store
from jobs import control
from jobs.status import JobStatus
from jobs.streams import TokenBatches, publish, read_after
from tasks.watch import GenerationWatch, JobWatcher


def running_job() -> str:
    job_id = uuid.uuid4().hex
    job_store().create(job_id, {"prompt": "hi"})
    return job_id


def server_ms(store) -> int:
    seconds, micros = store.redis.time()
    return seconds * 1000 + micros // 1000


def events(job_id: str) -> list[tuple[str, dict]]:
    return [(event.event, event.data) for event in read_after(job_store(), job_id, "0")]


def test_each_delivery_takes_a_higher_number_and_one_that_may_not_run_the_job_none():
    store, job_id = job_store(), running_job()
    first = store.start_delivery(job_id, JobStatus.ROUTING)
    second = store.start_delivery(job_id, JobStatus.ROUTING)  # routing again: a redelivered route
    assert 0 < first < second
    assert store.move(job_id, JobStatus.QUEUED, fence=second)
    third = store.start_delivery(job_id, JobStatus.GENERATING)
    assert third > second
    assert store.start_delivery(job_id, JobStatus.ROUTING) == 0, "a stale route delivery cannot run it"
    assert store.delivery(job_id) == third and store.annotate(job_id, fence=third, tokens_so_far=1)
    missing = uuid.uuid4().hex
    assert store.start_delivery(missing, JobStatus.ROUTING) == 0 and not store.redis.exists(f"job:{missing}")


def test_a_delivery_number_does_not_go_back_when_a_failover_lost_the_last_ones():
    # The promoted replica lacks the latest start: its count is behind the delivery that still runs.
    store, job_id = job_store(), running_job()
    lost_start = store.start_delivery(job_id, JobStatus.GENERATING)
    while server_ms(store) <= lost_start:  # a failover takes seconds; here the clock need only move on
        time.sleep(0.001)
    store.redis.hset(f"job:{job_id}", "delivery", 0)
    store.redis.hset(f"job:{job_id}", "status", JobStatus.QUEUED.value)
    redelivered = store.start_delivery(job_id, JobStatus.GENERATING)
    assert redelivered > lost_start, "the server's clock numbers it past the lost one"
    assert not store.annotate(job_id, fence=lost_start, tokens_so_far=2), "the older delivery is fenced off"


def test_a_superseded_delivery_can_no_longer_move_or_annotate_the_job():
    store, job_id = job_store(), running_job()
    first = store.start_delivery(job_id, JobStatus.GENERATING)
    second = store.start_delivery(job_id, JobStatus.GENERATING)  # handed back while the first still ran
    assert not store.annotate(job_id, fence=first, tokens_so_far=7)
    assert not store.move(job_id, JobStatus.SUCCEEDED, event=("final", {"by": "first"}), fence=first,
                          result={"response": "first"})
    assert store.move(job_id, JobStatus.SUCCEEDED, event=("final", {"by": "second"}), fence=second,
                      result={"response": "second"})
    record = store.get(job_id)
    assert record["result"] == {"response": "second"} and "tokens_so_far" not in record
    assert events(job_id) == [("final", {"by": "second"})], "one final event, the second delivery's"


def test_a_superseded_deliverys_tokens_never_reach_the_stream():
    store, job_id = job_store(), running_job()
    first = store.start_delivery(job_id, JobStatus.GENERATING)
    batches = TokenBatches(store, interval_s=30)
    publish(store, job_id, "start", {"attempt": 1}, first)
    batches.publish(job_id, "token", {"text": "old "}, fence=first)
    batches.flush()
    second = store.start_delivery(job_id, JobStatus.GENERATING)
    publish(store, job_id, "start", {"attempt": 2}, second)
    batches.publish(job_id, "token", {"text": "late old"}, fence=first)  # the first worker writes on
    batches.publish(job_id, "token", {"text": "new"}, fence=second)
    batches.flush()
    publish(store, job_id, "token", {"text": "late old again"}, first)
    assert events(job_id) == [("start", {"attempt": 1}), ("token", {"text": "old "}),
                              ("start", {"attempt": 2}), ("token", {"text": "new"})]


def test_a_cancel_outside_any_delivery_still_wins():
    store, job_id = job_store(), running_job()
    store.start_delivery(job_id, JobStatus.GENERATING)
    assert store.move(job_id, JobStatus.CANCELLED)


def test_the_watch_stops_a_superseded_delivery():
    store, job_id = job_store(), running_job()
    first = store.start_delivery(job_id, JobStatus.GENERATING)
    cancel = threading.Event()
    with GenerationWatch(store, job_id, cancel, poll_s=0.01, fence=first) as watch:
        watch.tokens = 3
        store.start_delivery(job_id, JobStatus.GENERATING)
        assert cancel.wait(5), "the engine is told to stop"
    assert watch.reason == "superseded"


def test_a_cancel_refusing_the_progress_note_is_still_a_cancel():
    """The job is cancelled between the watch's flag check and its progress note: the refused note must
    not read as a later delivery, or the cancelled job would end without its partial result."""
    store, job_id = job_store(), running_job()
    first = store.start_delivery(job_id, JobStatus.GENERATING)
    control.cancel_job(store, store.get(job_id))
    watch = GenerationWatch(store, job_id, threading.Event(), poll_s=60, fence=first)
    watch.tokens = 5
    JobWatcher(store, 60).poll([watch])
    assert watch.reason == "cancelled"
