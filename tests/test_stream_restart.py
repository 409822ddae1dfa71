"""A redelivered job starts over: a second `start` event in its stream. The OpenAI chat stream never
sends the answer twice (it ends with an in-stream error once text went out); the native SSE stream
passes every `start` on, and its clients reset on it.

No worker: the job records and their streams are written here as the generation task writes them.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from helpers import app_with, iter_sse, job_store
from jobs.status import JobStatus
from jobs.streams import publish
from webapp.openai_stream import streamed_completion

ROUTING = {"intent": "creative", "tier": "small", "score": 0.8, "threshold": 0.4, "rule": "matched", "top": []}
START = {"tier": "small", "model": "SmolLM2-135M-Instruct-q4", "routing": ROUTING}
ANSWER = ["Once", " upon", " a", " time"]


@pytest.fixture(scope="module")
def app():
    return app_with(stream_timeout_s=20.0, stream_heartbeat_s=0.2)


def _job(**fields) -> dict:
    """A job record as the router leaves it (routed, generating), not queued anywhere."""
    job = {"prompt": "a story", "messages": [{"role": "user", "content": "a story"}], "max_tokens": 8,
           "temperature": 0.0, "tier": "auto"}
    return job_store().create(uuid.uuid4().hex, job, status="generating", routing=ROUTING, **fields)


def _attempt(job_id: str, words: list[str], pause_s: float = 0.0) -> None:
    """One generation attempt's events: `start`, then a token per word."""
    publish(job_store(), job_id, "start", START)
    for word in words:
        time.sleep(pause_s)
        publish(job_store(), job_id, "token", {"text": word})


def _finish(job_id: str) -> None:
    """The job succeeds with the whole answer: final status and final event in one step."""
    result = {"response": "".join(ANSWER), "model_used": START["model"], "tier": "small", "routing": ROUTING,
              "cached": False, "tokens": len(ANSWER), "prompt_tokens": 9, "finish_reason": "length"}
    assert job_store().move(job_id, JobStatus.SUCCEEDED, event=("final", {"id": job_id, "status": "succeeded",
                                                                           **result}),
                            result=result, finished_at=time.time())


def _chat_stream(app, record: dict) -> list[dict]:
    """The chat stream of an existing job, as `POST /v1/chat/completions` with `stream` serves it."""
    with app.test_request_context("/v1/chat/completions", method="POST"):
        response = streamed_completion(record, include_usage=True)
    return [e for e in iter_sse(response.response) if "comment" not in e]


def _text(events: list[dict]) -> str:
    return "".join(e["data"]["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e["data"], dict) and e["data"].get("choices"))


def _assert_ends_with_a_restart_error(events: list[dict], sent_before: str) -> None:
    assert events[-1]["data"] == "[DONE]"
    error = events[-2]["data"]["error"]
    assert error["code"] == "job_restarted" and error["type"] == "server_error" and error["message"]
    assert _text(events) == sent_before, "the text after the restart was sent as well"
    assert not [e for e in events[:-2] if "error" in e["data"]], "one error, at the end"
    assert not [e for e in events if isinstance(e["data"], dict) and e["data"].get("choices")
                and e["data"]["choices"][0]["finish_reason"]], "an ended stream has no finish_reason chunk"


def test_a_restart_after_text_ends_the_chat_stream_with_an_error(app):
    record = _job()
    _attempt(record["id"], ANSWER[:2])  # the first worker died after two tokens
    _attempt(record["id"], ANSWER)  # the redelivered task starts over and finishes
    _finish(record["id"])
    events = _chat_stream(app, record)
    _assert_ends_with_a_restart_error(events, "Once upon")


def test_a_restart_while_the_client_reads_live_ends_the_chat_stream_with_an_error(app):
    """The same, with the events arriving while the stream is open (through the stream hub)."""
    record = _job()

    def generate() -> None:
        time.sleep(0.3)
        _attempt(record["id"], ANSWER[:2], pause_s=0.05)
        time.sleep(0.2)
        _attempt(record["id"], ANSWER, pause_s=0.05)
        _finish(record["id"])

    writer = threading.Thread(target=generate)
    writer.start()
    started = time.monotonic()
    events = _chat_stream(app, record)
    writer.join()
    _assert_ends_with_a_restart_error(events, "Once upon")
    assert time.monotonic() - started < 30, "the stream waited for its deadline instead of ending"


def test_a_restart_before_any_text_is_harmless(app):
    record = _job()
    publish(job_store(), record["id"], "start", START)  # the first attempt died before its first token
    _attempt(record["id"], ANSWER)
    _finish(record["id"])
    events = _chat_stream(app, record)
    assert _text(events) == "".join(ANSWER)
    assert events[-1]["data"] == "[DONE]" and not [e for e in events if "error" in e["data"]]
    finished = [e for e in events if e["data"] != "[DONE]" and e["data"]["choices"]
                and e["data"]["choices"][0]["finish_reason"]]
    assert [e["data"]["choices"][0]["finish_reason"] for e in finished] == ["length"]
    assert events[-2]["data"]["usage"]["completion_tokens"] == len(ANSWER)


def test_the_native_stream_passes_every_start_on(app):
    record = _job()
    _attempt(record["id"], ANSWER[:2])
    _attempt(record["id"], ANSWER)
    _finish(record["id"])
    response = app.test_client().get(f"/v1/jobs/{record['id']}/stream")
    events = [e for e in iter_sse(response.iter_encoded()) if "comment" not in e]
    assert [e["event"] for e in events] == ["start", "token", "token", "start", *["token"] * 4, "final"]
    after_last_start = events[3:]
    assert "".join(e["data"]["text"] for e in after_last_start if e["event"] == "token") == events[-1]["data"][
        "response"], "a client that resets on `start` has the answer once"
