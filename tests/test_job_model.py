"""The job model on real Redis: the guard script's transitions, final jobs staying final, final
stream events written with the final status, and every writer of a job against a cancelled one.

No worker and no model: the writers are called the way the tasks call them.
"""
from __future__ import annotations

import itertools
import json
import time
import uuid

import numpy as np
import pytest

from helpers import job_store
from jobs import control
from jobs.status import FINAL_STATUSES, JobStatus, may_move
from jobs.store import job_key, stream_key
from jobs.follow import follow_job

PAIRS = list(itertools.product(JobStatus, JobStatus))
_created: list[str] = []  # job ids the `cleanup` fixture removes after each test


def new_job(status: JobStatus = JobStatus.QUEUED, **fields) -> str:
    """A fresh job in `status`; removed again with its stream by the `cleanup` fixture."""
    job_id = uuid.uuid4().hex
    job_store().create(job_id, {"prompt": "job model test", "max_tokens": 4}, status=JobStatus(status).value,
                       **fields)
    _created.append(job_id)
    return job_id


@pytest.fixture(autouse=True)
def cleanup():
    yield
    client = job_store().redis
    while _created:
        job_id = _created.pop()
        client.delete(job_key(job_id), stream_key(job_id), control.cancel_key(job_id),
                      f"{job_key(job_id)}:deliveries")


def stream_entries(job_id: str) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in job_store().redis.xrange(stream_key(job_id))]


# --- The guard script applies exactly the Python table ----------------------------------------------------------

@pytest.mark.parametrize("current,target", PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS])
def test_guard_script_applies_the_transition_table(current: JobStatus, target: JobStatus):
    store = job_store()
    job_id = new_job(current)
    applied = store.move(job_id, target, marker="x")
    allowed = may_move(current.value, target.value)
    assert applied is allowed, f"{current.value} -> {target.value}: the Lua guard said {applied}, Python {allowed}"
    record = store.get(job_id)
    assert record["status"] == (target.value if allowed else current.value)
    assert ("marker" in record) is allowed, "a refused move must write nothing, an applied one its fields"


def test_the_table_covers_every_status_and_final_ones_move_only_to_themselves():
    from jobs.status import TRANSITIONS

    assert set(TRANSITIONS) == set(JobStatus)
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] <= {status}


def test_unknown_job_is_never_created_by_a_move():
    store = job_store()
    job_id = uuid.uuid4().hex
    _created.append(job_id)
    assert store.move(job_id, JobStatus.FAILED, error={"type": "X", "message": "x"}) is False
    assert store.annotate(job_id, tokens_so_far=1) is False
    assert store.get(job_id) is None
    assert not store.redis.exists(stream_key(job_id))


# --- A final job stays final -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", sorted(FINAL_STATUSES, key=lambda s: s.value), ids=lambda s: s.value)
def test_annotate_is_refused_on_a_final_job(status: JobStatus):
    store = job_store()
    job_id = new_job(status)
    assert store.annotate(job_id, tokens_so_far=3) is False
    record = store.get(job_id)
    assert record["status"] == status.value
    assert "tokens_so_far" not in record


def test_annotate_writes_on_a_running_job():
    store = job_store()
    job_id = new_job(JobStatus.GENERATING)
    assert store.annotate(job_id, tokens_so_far=3) is True
    assert store.get(job_id)["tokens_so_far"] == "3"


def test_cancelled_to_cancelled_keeps_fields_and_adds_missing_ones():
    store = job_store()
    job_id = new_job(JobStatus.CANCELLED, finished_at=100.0)
    result = {"response": "partial", "tokens": 2, "finish_reason": "cancelled"}
    assert store.move(job_id, JobStatus.CANCELLED, result=result, finished_at=200.0) is True
    record = store.get(job_id)
    assert record["status"] == "cancelled"
    assert record["finished_at"] == 100.0, "what the cancel wrote must not be overwritten"
    assert record["result"] == result, "a field the cancelled job lacked is added"


# --- The final stream event is written with the final status -----------------------------------------------------

def test_final_event_and_final_record_are_written_in_one_step():
    store = job_store()
    job_id = new_job(JobStatus.GENERATING)
    result = {"response": "hello", "tokens": 1}
    final = ("final", {"id": job_id, "status": "succeeded", **result})
    assert store.move(job_id, JobStatus.SUCCEEDED, event=final, result=result, finished_at=time.time()) is True
    entries = stream_entries(job_id)
    assert entries and entries[-1]["event"] == "final"
    assert json.loads(entries[-1]["data"])["status"] == "succeeded"
    record = store.get(job_id)
    assert record["status"] == "succeeded" and record["result"] == result
    assert store.redis.ttl(stream_key(job_id)) > 0, "the stream expires with its job"


def test_refused_final_move_writes_no_stream_entry():
    store = job_store()
    job_id = new_job(JobStatus.GENERATING)
    control.cancel_job(store, store.get(job_id))
    final = ("final", {"id": job_id, "status": "succeeded", "response": "late"})
    assert store.move(job_id, JobStatus.SUCCEEDED, event=final, result={"response": "late"}) is False
    assert stream_entries(job_id) == []
    record = store.get(job_id)
    assert record["status"] == "cancelled" and "result" not in record


# --- Every writer against a cancelled job ------------------------------------------------------------------------

def cancelled_job(**fields) -> tuple[str, dict]:
    """A job cancelled through jobs.control (as the DELETE endpoint does); returns it with its record."""
    job_id = new_job(JobStatus.QUEUED, **fields)
    record = control.cancel_job(job_store(), job_store().get(job_id))
    assert record["status"] == "cancelled" and "finished_at" in record
    return job_id, record


@pytest.fixture()
def semantic():
    """A real SemanticCache on the test Redis under a prefix of its own (cleared afterwards)."""
    from cache.semantic import SemanticCache
    from engines.provider import served_models

    cache = SemanticCache(job_store(), served_models(), threshold=0.9, ttl_s=600, max_entries=100,
                          prefix=f"test:semantic:{uuid.uuid4().hex}")
    yield cache
    cache.index.clear()


def seed_semantic(cache, prompt: str) -> tuple[dict, dict, np.ndarray]:
    """Add an answer for `prompt` under a random unit vector; returns the job, routing and vector."""
    tier, model = next(iter(cache.models.items()))
    job = {"prompt": prompt, "max_tokens": 8, "temperature": 0.0, "tier": "auto", "priority": 5, "cache": True}
    routing = {"tier": tier, "intent": "factual", "score": 0.5, "rule": "test"}
    result = {"response": "cached answer", "model_used": model, "tier": tier, "intent": "factual", "score": 0.5,
              "routing": routing, "tokens": 2, "finish_reason": "stop"}
    vector = np.random.default_rng().standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    cache.add(job, result, vector)
    assert cache.index.size() == 1
    return job, routing, vector


def test_semantic_hit_finishes_a_live_job(semantic):
    """The control case of the next test: the seeded entry really is a hit."""
    job, routing, vector = seed_semantic(semantic, f"what is a cache {uuid.uuid4().hex[:6]}")
    job_id = new_job(JobStatus.ROUTING)
    result = semantic.answer(job_id, job, routing, vector)
    assert result is not None and result["cached"] == "semantic"
    record = job_store().get(job_id)
    assert record["status"] == "succeeded" and record["result"]["response"] == "cached answer"


def test_a_miss_parks_the_embedding_and_the_generated_answer_is_stored_with_it(semantic):
    job, routing, vector = seed_semantic(semantic, f"what is a cache {uuid.uuid4().hex[:6]}")
    other = -vector  # as far from the seeded entry as a vector can be: a miss
    job_id = new_job(JobStatus.ROUTING)
    assert semantic.answer(job_id, {**job, "prompt": "why is the sky blue"}, routing, other) is None
    result = {"response": "Rayleigh scattering.", "model_used": semantic.models[routing["tier"]],
              "tier": routing["tier"], "intent": "factual", "score": 0.5, "routing": routing, "tokens": 3,
              "finish_reason": "stop"}
    semantic.store(job_id, {**job, "prompt": "why is the sky blue"}, result)
    assert semantic.index.size() == 2
    (entry, similarity), _ = semantic.lookup({**job, "prompt": "why is the sky blue"}, routing["tier"], other)
    assert entry["response"] == "Rayleigh scattering." and similarity > 0.99


def test_semantic_hit_does_not_revive_a_cancelled_job(semantic):
    job, routing, vector = seed_semantic(semantic, f"what is a cache {uuid.uuid4().hex[:6]}")
    job_id, before = cancelled_job()
    assert semantic.answer(job_id, job, routing, vector) is None, "a cancel wins over a cache hit"
    record = job_store().get(job_id)
    assert record["status"] == "cancelled"
    assert record["finished_at"] == before["finished_at"]


def test_generation_moves_do_not_revive_a_cancelled_job():
    store = job_store()
    job_id, before = cancelled_job()
    assert store.move(job_id, JobStatus.GENERATING, generation_started_at=time.time(), tokens_so_far=0) is False
    final = ("final", {"id": job_id, "status": "succeeded", "response": "x"})
    assert store.move(job_id, JobStatus.SUCCEEDED, event=final, result={"response": "x"},
                      finished_at=time.time()) is False
    assert store.move(job_id, JobStatus.QUEUED, routing={"tier": "large", "intent": "x", "score": 0.0}) is False
    record = store.get(job_id)
    assert record["status"] == "cancelled"
    assert not {"generation_started_at", "result", "routing"} & record.keys()
    assert record["finished_at"] == before["finished_at"]
    assert stream_entries(job_id) == []


def test_mark_job_failed_fails_a_running_job():
    """The control case: the signal handler does write a failure."""
    from tasks.lifecycle import mark_job_failed

    job_id = new_job(JobStatus.GENERATING)
    mark_job_failed(task_id=job_id, exception=RuntimeError("boom"))
    record = job_store().get(job_id)
    assert record["status"] == "failed"
    assert record["error"] == {"type": "RuntimeError", "message": "boom"}


def test_mark_job_failed_does_not_touch_a_cancelled_job():
    from tasks.lifecycle import mark_job_failed

    job_id, before = cancelled_job()
    mark_job_failed(task_id=job_id, exception=RuntimeError("x"))
    record = job_store().get(job_id)
    assert record["status"] == "cancelled"
    assert "error" not in record
    assert record["finished_at"] == before["finished_at"]


def test_progress_is_not_recorded_on_a_cancelled_job():
    store = job_store()
    job_id, _ = cancelled_job()
    assert store.annotate(job_id, tokens_so_far=3) is False
    assert "tokens_so_far" not in store.get(job_id)


def test_cancel_endpoint_again_on_a_cancelled_job(client):
    job_id, before = cancelled_job()
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "cancelled" and body["id"] == job_id
    record = job_store().get(job_id)
    assert record["status"] == "cancelled" and record["finished_at"] == before["finished_at"]


def test_cancel_endpoint_refuses_a_succeeded_job(client):
    job_id = new_job(JobStatus.SUCCEEDED, result={"response": "done"}, finished_at=time.time())
    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "conflict" and error["job_status"] == "succeeded"
    assert job_store().get(job_id)["status"] == "succeeded"
    assert not job_store().redis.exists(control.cancel_key(job_id)), "a finished job gets no cancel flag"


# --- Following a job that ends without a stream ------------------------------------------------------------------

def test_follow_job_makes_the_final_event_from_the_record_of_an_ended_job():
    store = job_store()
    job_id, _ = cancelled_job()
    events = list(follow_job(store, job_id, timeout_s=5, heartbeat_s=1))
    assert [e.event for e in events] == ["final"]
    assert events[0].id is None, "made from the record, not read from a stream"
    assert events[0].data["id"] == job_id and events[0].data["status"] == "cancelled"


def test_follow_job_ends_with_the_record_when_a_followed_job_fails_without_a_stream():
    store = job_store()
    job_id = new_job(JobStatus.ROUTING)
    events = follow_job(store, job_id, timeout_s=10, heartbeat_s=0.05)
    assert next(events).event == "heartbeat", "a job still running gives heartbeats, not an end"
    error = {"type": "RuntimeError", "message": "router died"}
    assert store.move(job_id, JobStatus.FAILED, error=error, finished_at=time.time())
    rest = list(events)
    ends = [e for e in rest if e.event != "heartbeat"]
    assert [e.event for e in ends] == ["final"]
    assert ends[0].id is None
    assert ends[0].data == {"id": job_id, "status": "failed", "error": error}


@pytest.mark.parametrize("stage", [JobStatus.ROUTING, JobStatus.GENERATING], ids=lambda s: s.value)
def test_a_redelivered_task_may_start_its_stage_again(stage: JobStatus):
    """A worker that died mid-task leaves its job in the task's stage; the redelivered task must be
    able to move it there again, or the job would sit in that stage until it expires."""
    job_id = new_job(stage)
    assert job_store().move(job_id, stage, routing_started_at=time.time())
    assert job_store().get(job_id)["status"] == stage.value
