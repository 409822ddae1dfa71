"""The whole path on real parts: Flask -> routing worker -> tier worker -> the engine's model -> Redis."""
from __future__ import annotations

import pytest

from engines.provider import served_models
from helpers import app_with, job_store, wait_for_job
from jobs.store import stream_key

pytestmark = pytest.mark.usefixtures("workers")


@pytest.mark.parametrize(
    "prompt,tier,queue",
    [
        ("hey! how's it going today?", "small", "small-queue"),
        ("My Flask app crashes with a KeyError traceback when two requests arrive at once. "
         "Help me debug this race condition.", "large", "large-queue"),
    ],
)
def test_submit_and_poll_lands_on_its_queue(client, prompt, tier, queue):
    response = client.post("/v1/jobs", json={"prompt": prompt, "max_tokens": 6})
    assert response.status_code == 202
    submitted = response.get_json()
    assert submitted["status"] == "queued"
    assert response.headers["Location"] == f"/v1/jobs/{submitted['id']}"

    view = wait_for_job(client, submitted["id"])
    assert view["status"] == "succeeded", view
    result = view["result"]
    assert result["tier"] == tier and result["queue"] == queue
    assert view["routing"]["tier"] == tier
    assert result["response"].strip(), "the model produced no text"
    assert 1 <= result["tokens"] <= 6
    assert result["cached"] is False
    assert result["model_used"] == served_models()[tier]
    for field in ("latency_ms", "queue_ms"):
        assert result[field] >= 0
    assert result["latency_ms"] >= result["queue_ms"]
    # from the record's stamps: the job was created (and queued) before its generation started
    assert result["latency_ms"] > result["generation_ms"], result


def test_synchronous_generate_answers_with_real_model_text(client):
    response = client.post("/generate", json={"prompt": "What is the capital of France?", "max_tokens": 10,
                                              "tier": "small"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert "Paris" in body["response"]
    assert body["model_used"] == served_models()["small"]
    assert body["routing"]["rule"] == "forced"
    for field in ("latency_ms", "intent", "score", "cached"):
        assert field in body


def test_a_job_waited_for_whole_writes_no_token_events(client):
    """Nobody can follow a synchronous request's job while it runs (its id comes with the answer): its
    stream holds the final event alone, with the whole answer, and the tokens cost no Redis writes."""
    response = client.post("/generate", json={"prompt": "Name a colour.", "max_tokens": 8, "tier": "small",
                                              "cache": False})
    assert response.status_code == 200, response.get_json()
    events = [entry[1][b"event"].decode() for entry in
              job_store().redis.xrange(stream_key(response.get_json()["id"]))]
    assert events == ["final"]


def test_forced_large_tier_runs_on_large_queue(client):
    response = client.post("/v1/jobs", json={"prompt": "hi", "max_tokens": 3, "tier": "large"})
    view = wait_for_job(client, response.get_json()["id"])
    assert view["result"]["queue"] == "large-queue"
    assert view["routing"]["rule"] == "forced"
    assert view["routing"]["intent"] == "casual", "a forced tier still reports the real best intent"


def test_synchronous_timeout_returns_504_with_the_job_id(client):
    impatient = app_with(wait_timeout_s=0.05).test_client()
    response = impatient.post("/generate", json={"prompt": "Tell me a long story about a dragon", "max_tokens": 4})
    assert response.status_code == 504
    error = response.get_json()["error"]
    assert error["code"] == "timeout"
    view = wait_for_job(client, error["id"])  # the job keeps running and can be polled
    assert view["status"] == "succeeded"


def test_ready_reports_redis_and_live_workers(client):
    response = client.get("/ready")
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "ready" and body["redis"] is True
    assert all(body["workers"][q] >= 1 for q in ("routing", "small-queue", "large-queue"))
    assert client.get("/health").get_json() == {"status": "ok"}
