"""Fencing (JobStore.begin_delivery): once a later delivery of a job has begun, the earlier one can
neither move the job, nor note progress, nor write to its stream; writers outside a delivery (a
cancel) are not fenced. On the test Redis, with the real scripts."""
from __future__ import annotations

import threading
import uuid

from helpers import job_store
from jobs import control
from jobs.status import JobStatus
from jobs.streams import TokenBatches, publish, read_after
from tasks.watch import GenerationWatch


def running_job() -> str:
    job_id = uuid.uuid4().hex
    job_store().create(job_id, {"prompt": "hi"})
    return job_id


def events(job_id: str) -> list[tuple[str, dict]]:
    return [(event.event, event.data) for event in read_after(job_store(), job_id, "0")]


def test_each_delivery_takes_the_next_number_and_a_missing_job_none():
    store, job_id = job_store(), running_job()
    assert [store.begin_delivery(job_id) for _ in range(3)] == [1, 2, 3]
    assert store.begin_delivery(uuid.uuid4().hex) == 0
    assert not store.redis.exists(f"job:{uuid.uuid4().hex}"), "numbering creates no record"


def test_a_superseded_delivery_can_no_longer_move_or_annotate_the_job():
    store, job_id = job_store(), running_job()
    first = store.begin_delivery(job_id)
    assert store.move(job_id, JobStatus.GENERATING, fence=first)
    second = store.begin_delivery(job_id)  # the job was handed back while the first still ran
    assert not store.annotate(job_id, fence=first, tokens_so_far=7)
    assert not store.move(job_id, JobStatus.SUCCEEDED, event=("final", {"by": "first"}), fence=first,
                          result={"response": "first"})
    assert store.move(job_id, JobStatus.GENERATING, fence=second)
    assert store.move(job_id, JobStatus.SUCCEEDED, event=("final", {"by": "second"}), fence=second,
                      result={"response": "second"})
    record = store.get(job_id)
    assert record["result"] == {"response": "second"} and "tokens_so_far" not in record
    assert events(job_id) == [("final", {"by": "second"})], "one final event, the second delivery's"


def test_a_superseded_deliverys_tokens_never_reach_the_stream():
    store, job_id = job_store(), running_job()
    first = store.begin_delivery(job_id)
    batches = TokenBatches(store, interval_s=30)
    publish(store, job_id, "start", {"attempt": 1}, first)
    batches.publish(job_id, "token", {"text": "old "}, fence=first)
    batches.flush()
    second = store.begin_delivery(job_id)
    publish(store, job_id, "start", {"attempt": 2}, second)
    batches.publish(job_id, "token", {"text": "late old"}, fence=first)  # the first worker writes on
    batches.publish(job_id, "token", {"text": "new"}, fence=second)
    batches.flush()
    publish(store, job_id, "token", {"text": "late old again"}, first)
    assert events(job_id) == [("start", {"attempt": 1}), ("token", {"text": "old "}),
                              ("start", {"attempt": 2}), ("token", {"text": "new"})]


def test_a_cancel_outside_any_delivery_still_wins():
    store, job_id = job_store(), running_job()
    store.begin_delivery(job_id)
    assert store.move(job_id, JobStatus.CANCELLED)


def test_the_watch_stops_a_superseded_delivery():
    store, job_id = job_store(), running_job()
    first = store.begin_delivery(job_id)
    store.move(job_id, JobStatus.GENERATING, fence=first)
    cancel = threading.Event()
    with GenerationWatch(store, job_id, cancel, poll_s=0.01, fence=first) as watch:
        watch.tokens = 3
        store.begin_delivery(job_id)
        assert cancel.wait(5), "the engine is told to stop"
    assert watch.reason == "superseded"


def test_a_cancel_refusing_the_progress_note_is_still_a_cancel():
    """The job is cancelled between the watch's flag check and its progress note: the refused note must
    not read as a later delivery, or the cancelled job would end without its partial result."""
    store, job_id = job_store(), running_job()
    first = store.begin_delivery(job_id)
    store.move(job_id, JobStatus.GENERATING, fence=first)
    control.cancel_job(store, store.get(job_id))
    watch = GenerationWatch(store, job_id, threading.Event(), poll_s=60, fence=first)
    watch.tokens = 5
    watch._report_progress()
    assert watch.reason == "cancelled"
