"""Token events written in batches (jobs.streams.TokenBatches), on the test Redis."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis

from helpers import job_store
from jobs.store import JobStore, stream_key
from jobs.streams import TokenBatches, read_after


def texts(job_id: str) -> list[str]:
    return [event.data["text"] for event in read_after(job_store(), job_id, "0")]


def test_the_first_token_is_written_at_once_and_later_ones_together():
    batches, job_id = TokenBatches(job_store(), interval_s=30), uuid.uuid4().hex
    batches.publish(job_id, "token", {"text": "Once"}, at_once=True)
    assert texts(job_id) == ["Once"], "time to first token is not delayed"
    batches.publish(job_id, "token", {"text": " upon"})
    batches.publish(job_id, "token", {"text": " a"})
    assert texts(job_id) == ["Once"], "later tokens wait for the next batch"
    batches.flush()
    assert texts(job_id) == ["Once", " upon", " a"]
    assert 0 < job_store().redis.ttl(stream_key(job_id)) <= job_store().ttl_s


def test_pending_tokens_go_out_within_the_interval():
    batches, job_id = TokenBatches(job_store(), interval_s=0.02), uuid.uuid4().hex
    for written, text in enumerate(("a", "b")):  # the second after the writer went idle again
        batches.publish(job_id, "token", {"text": text})
        deadline = time.monotonic() + 5
        while len(texts(job_id)) == written and time.monotonic() < deadline:
            time.sleep(0.005)
        assert texts(job_id) == ["a", "b"][: written + 1], "the background writer sends what waits"
        time.sleep(0.1)


def test_interval_zero_writes_each_token_at_once():
    batches, job_id = TokenBatches(job_store(), interval_s=0), uuid.uuid4().hex
    for word in ("x", "y"):
        batches.publish(job_id, "token", {"text": word})
        assert texts(job_id)[-1] == word


def test_many_jobs_share_batches_and_keep_their_order():
    batches = TokenBatches(job_store(), interval_s=0.005)
    jobs = [uuid.uuid4().hex for _ in range(6)]

    def write(job_id: str) -> None:
        for i in range(200):
            batches.publish(job_id, "token", {"text": str(i)}, at_once=i % 50 == 0)

    threads = [threading.Thread(target=write, args=(job_id,)) for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches.flush()
    for job_id in jobs:
        assert texts(job_id) == [str(i) for i in range(200)]


def test_a_flush_without_redis_raises():
    dead = JobStore(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)
    batches = TokenBatches(dead, interval_s=30)
    batches.publish("job", "token", {"text": "a"})
    with pytest.raises(redis.ConnectionError):
        batches.flush()


def test_a_batch_redis_refused_is_written_by_the_next_flush_in_order():
    batches, job_id = TokenBatches(job_store(), interval_s=30), uuid.uuid4().hex
    batches.publish(job_id, "token", {"text": "a"}, at_once=True)
    batches.publish(job_id, "token", {"text": "b"})
    batches.store = JobStore(redis.Redis(port=1, socket_connect_timeout=0.2), ttl_s=60)  # Redis unreachable
    with pytest.raises(redis.ConnectionError):
        batches.flush()
    batches.publish(job_id, "token", {"text": "c"})
    batches.store = job_store()  # Redis is back
    batches.flush()
    assert texts(job_id) == ["a", "b", "c"], "nothing lost, nothing reordered"


def test_discard_drops_only_that_jobs_pending_tokens():
    batches, dropped, kept = TokenBatches(job_store(), interval_s=30), uuid.uuid4().hex, uuid.uuid4().hex
    for job_id in (dropped, kept):
        batches.publish(job_id, "token", {"text": "x"})
    batches.discard(dropped)
    batches.flush()
    assert (texts(dropped), texts(kept)) == ([], ["x"])
