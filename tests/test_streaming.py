"""Token streaming: the generation task writes a Redis Stream per job, `/v1/jobs/<id>/stream` serves it as SSE."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from helpers import app_with, iter_sse, job_store
from jobs.store import stream_key
from jobs.streams import publish
from settings import get_settings
from tasks.lifecycle import mark_job_failed

DRAGON = {"prompt": "Tell me a long story about a dragon", "max_tokens": 8, "tier": "small", "cache": False}


def read_stream(client, job_id: str, comments: bool = False, **headers) -> list[dict]:
    """The whole SSE stream of a job; heartbeat comments only when asked for."""
    response = client.get(f"/v1/jobs/{job_id}/stream", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/event-stream"
    return [e for e in iter_sse(response.iter_encoded()) if comments or "comment" not in e]


def events_named(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e.get("event") == name]


@pytest.fixture(scope="module")
def streamed_job(workers, client):
    """A real job on the small tier, read live from the moment it was submitted."""
    job_id = client.post("/v1/jobs", json=DRAGON).get_json()["id"]
    events = read_stream(client, job_id)
    RECORD_AT_FINAL[job_id] = job_store().get(job_id)  # read the moment the final event has arrived
    return job_id, events


RECORD_AT_FINAL: dict[str, dict] = {}


def test_the_record_is_finished_when_the_final_event_arrives(streamed_job):
    """The final event and the finished record are written in one Redis step, so no reader sees one
    without the other."""
    job_id, events = streamed_job
    record = RECORD_AT_FINAL[job_id]
    assert record["status"] == "succeeded" and "finished_at" in record
    assert record["result"]["response"] == events[-1]["data"]["response"]


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def test_live_stream_carries_each_token_then_a_final_event_with_the_result(streamed_job):
    job_id, events = streamed_job
    assert [e["event"] for e in events][0] == "start"
    assert events[0]["data"]["tier"] == "small" and events[0]["data"]["routing"]["rule"] == "forced"
    tokens = events_named(events, "token")
    assert len(tokens) >= 2, "the answer came as one piece, not token by token"
    final = events[-1]
    assert final["event"] == "final" and events_named(events, "final") == [final]
    result = final["data"]
    assert result["status"] == "succeeded" and result["id"] == job_id
    assert "".join(t["data"]["text"] for t in tokens) == result["response"]
    for field in ("latency_ms", "queue_ms", "routing_ms", "first_token_ms", "tier", "intent", "score", "routing",
                  "model_used", "tokens"):
        assert field in result, field
    assert result["cached"] is False


def test_tokens_are_published_while_the_job_generates(streamed_job):
    job_id, events = streamed_job
    first_token_ms = int(events_named(events, "token")[0]["id"].split("-")[0])  # Redis stream ids are ms timestamps
    finished_at = job_store().get(job_id)["finished_at"]
    assert first_token_ms < finished_at * 1000


def test_a_late_client_gets_everything_from_the_start(streamed_job, client):
    job_id, live = streamed_job
    assert read_stream(client, job_id) == live


def test_last_event_id_resumes_after_that_event(streamed_job, client):
    job_id, live = streamed_job
    first_token = events_named(live, "token")[0]
    resumed = read_stream(client, job_id, **{"Last-Event-ID": first_token["id"]})
    assert resumed == live[live.index(first_token) + 1:]


def test_the_stream_expires_with_the_job(streamed_job):
    job_id, _ = streamed_job
    redis = job_store().redis
    stream_ttl, job_ttl = redis.ttl(stream_key(job_id)), redis.ttl(f"job:{job_id}")
    assert 0 < stream_ttl <= get_settings().job_ttl_s
    assert abs(stream_ttl - job_ttl) <= 60, "the stream and its job must expire together"


def test_tokens_reach_an_http_client_while_the_job_is_still_generating(live_server):
    job_id = requests.post(f"{live_server}/v1/jobs", json=DRAGON, timeout=10).json()["id"]
    with requests.get(f"{live_server}/v1/jobs/{job_id}/stream", stream=True, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = iter_sse(response.iter_content(chunk_size=None))
        first_token = next(e for e in events if e.get("event") == "token")
        status_at_first_token = requests.get(f"{live_server}/v1/jobs/{job_id}", timeout=10).json()["status"]
        rest = list(events)
    assert first_token["data"]["text"]
    assert status_at_first_token == "generating", "tokens were held back until the job ended"
    assert rest[-1]["event"] == "final" and rest[-1]["data"]["status"] == "succeeded"


def _job_record(**fields) -> str:
    """A job record written the way the web app writes one, and not queued: only the stream endpoint sees it."""
    job_id = uuid.uuid4().hex
    store = job_store()
    store.create(job_id, {"prompt": "hi", "max_tokens": 4, "temperature": 0.0, "tier": "auto"}, **fields)
    return job_id


def test_a_job_finished_without_generation_ends_the_stream_from_its_record(client):
    result = {"response": "Paris.", "tier": "small", "cached": True, "latency_ms": 3.0, "queue_ms": 0.0,
              "routing_ms": 0.0, "first_token_ms": 0.0, "model_used": "SmolLM2-135M-Instruct-q4"}
    job_id = _job_record(status="succeeded", result=result, finished_at=time.time())  # as a cache hit does
    events = read_stream(client, job_id)
    assert events == [{"event": "final", "data": {"id": job_id, "status": "succeeded", **result}, "id": None}]


def test_a_job_that_fails_mid_stream_ends_with_a_final_failure(client):
    job_id = _job_record(status="generating")
    publish(job_store(), job_id, "start", {"tier": "small", "model": "m", "routing": {}})
    publish(job_store(), job_id, "token", {"text": "Once"})
    mark_job_failed(task_id=job_id, exception=RuntimeError("engine exploded"))
    events = read_stream(client, job_id)
    assert [e["event"] for e in events] == ["start", "token", "final"]
    final = events[-1]["data"]
    assert final["status"] == "failed" and final["error"]["message"] == "engine exploded"


def test_a_job_that_never_ends_gets_heartbeats_then_a_timeout_event():
    app = app_with(stream_timeout_s=1.0, stream_heartbeat_s=0.2)
    job_id = _job_record()
    events = read_stream(app.test_client(), job_id, comments=True)
    assert {"comment": "keep-alive"} in events
    assert events[-1]["event"] == "timeout"
    assert events[-1]["data"]["status"] == "queued"


@pytest.mark.parametrize("job_id", ["nope", "0123456789abcdef0123456789abcdef"])
def test_streaming_an_unknown_job_is_a_json_404(client, job_id):
    response = client.get(f"/v1/jobs/{job_id}/stream")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
