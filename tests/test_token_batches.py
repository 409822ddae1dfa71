"""Token events written in batches (jobs.streams.TokenBatches), on the test Redis."""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis

from helpers import job_store
from jobs.status import JobStatus
from jobs.store import JobStore, job_key, stream_key
from jobs.streams import TokenBatches, _append, read_after


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


def _attempt(batches: TokenBatches) -> tuple[str, int]:
    """A recorded running job whose attempt began through `batches` with "a" and "b" written."""
    store, job_id = job_store(), uuid.uuid4().hex
    store.create(job_id, {"prompt": "p"})
    fence = store.start_delivery(job_id, JobStatus.GENERATING)
    batches.publish(job_id, "start", {"tier": "small"}, at_once=True, fence=fence)
    for text in ("a", "b"):
        batches.publish(job_id, "token", {"text": text}, fence=fence)
        batches.flush()
    return job_id, fence


def text_after_last_start(job_id: str) -> str:
    """What a reader that keeps the stream's contract (drop the text at each `start`) ends up with."""
    text = ""
    for event in read_after(job_store(), job_id, "0"):
        text = "" if event.event == "start" else text + event.data["text"]
    return text


def test_a_stream_that_lost_its_last_write_in_a_failover_is_written_again_from_its_start():
    batches = TokenBatches(job_store(), interval_s=30)
    job_id, fence = _attempt(batches)
    client = job_store().redis
    last_id = client.xrevrange(stream_key(job_id), count=1)[0][0]
    client.xdel(stream_key(job_id), last_id)  # what the promoted replica never got: "b" and its count
    client.hset(job_key(job_id), "stream_events", 2)
    batches.publish(job_id, "token", {"text": "c"}, fence=fence)
    batches.flush()
    assert text_after_last_start(job_id) == "abc", "no gap: the attempt was written again from its start"
    assert [event.event for event in read_after(job_store(), job_id, "0")].count("start") == 2
    assert int(client.hget(job_key(job_id), "stream_events")) == 4


def test_a_write_that_landed_although_it_failed_is_not_read_twice():
    batches = TokenBatches(job_store(), interval_s=30)
    job_id, fence = _attempt(batches)
    append = [(job_id, fence, "token", json.dumps({"text": "c"}))]
    _append(job_store(), append)  # the write landed, its reply was lost: the worker sends it again
    batches.publish(job_id, "token", {"text": "c"}, fence=fence)
    batches.flush()
    assert text_after_last_start(job_id) == "abc"


def test_writes_that_agree_with_the_stream_are_never_written_again():
    batches = TokenBatches(job_store(), interval_s=30)
    job_id, _ = _attempt(batches)
    assert [event.event for event in read_after(job_store(), job_id, "0")] == ["start", "token", "token"]
    batches.finish(job_id)
    assert text_after_last_start(job_id) == "ab"
