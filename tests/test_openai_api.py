"""The OpenAI-compatible API, driven by the official `openai` client against a live gunicorn."""
from __future__ import annotations

import json

import openai
import pytest
import requests

from engines.provider import served_models
from helpers import iter_sse, job_store
from test_api_validation import _queued_messages

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
DRAGON = [{"role": "user", "content": "Tell me a long story about a dragon"}]


@pytest.fixture(scope="module")
def oai(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=180)


def test_non_streaming_answer_is_a_chat_completion_with_usage_and_routing(oai):
    raw = oai.chat.completions.with_raw_response.create(model="auto", messages=FRANCE, max_tokens=8)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert 1 <= usage.completion_tokens <= 8 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    routing = completion.routing  # the extra field
    assert routing["rule"] in ("matched", "fallback") and routing["cached"] is False
    assert raw.headers["X-Route-Tier"] == routing["tier"]
    assert raw.headers["X-Route-Intent"] == routing["intent"]
    assert completion.model == served_models()[routing["tier"]]


def test_streaming_sends_chunks_token_by_token_and_usage_last(oai):
    with oai.chat.completions.with_streaming_response.create(
        model="auto", messages=DRAGON, max_tokens=8, stream=True, stream_options={"include_usage": True}
    ) as response:
        headers = response.headers
        chunks = list(response.parse())
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, "the answer did not arrive token by token"
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 1 and finished[0].routing["tier"] == headers["X-Route-Tier"]
    assert chunks[-1].choices == [] and 1 <= chunks[-1].usage.completion_tokens <= 8
    job = job_store().get(headers["X-Job-Id"])  # finished in the same step as the final event
    assert "".join(pieces) == job["result"]["response"]


def test_the_raw_stream_ends_with_done(live_server):
    body = {"model": "small", "messages": FRANCE, "max_tokens": 3, "stream": True}
    with requests.post(f"{live_server}/v1/chat/completions", json=body, stream=True, timeout=180) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [e for e in iter_sse(response.iter_content(chunk_size=None)) if "comment" not in e]
    assert events[-1]["data"] == "[DONE]"
    assert events[0]["data"]["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize("tier,model", [("large", "large"), ("small", "served id")])
def test_a_forced_tier_runs_there_and_says_so(oai, tier, model):
    model = served_models()[tier] if model == "served id" else model
    messages = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "My Flask app crashes with a KeyError traceback; help me debug it."},
                {"role": "assistant", "content": "Which line raises it?"},
                {"role": "user", "content": "hi"}]
    raw = oai.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=3)
    completion = raw.parse()
    assert raw.headers["X-Route-Tier"] == tier and raw.headers["X-Route-Rule"] == "forced"
    assert completion.model == served_models()[tier]
    assert completion.routing["tier"] == tier
    job = job_store().get(raw.headers["X-Job-Id"])
    assert job["result"]["queue"] == f"{tier}-queue"
    assert job["request"]["prompt"] == "hi", "the router embeds the last user message"
    assert job["request"]["messages"] == messages, "the model sees the whole conversation"


def test_an_invalid_request_raises_the_clients_bad_request_error(oai):
    before = _queued_messages()
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="auto", messages=FRANCE, max_tokens=0)
    assert caught.value.param == "max_tokens"
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="auto", messages=[], stream=True)
    assert caught.value.param == "messages"
    assert _queued_messages() == before


def test_an_unknown_model_raises_not_found(oai):
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="gpt-imaginary", messages=FRANCE)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_models_lists_the_served_models_and_the_routing_names(oai):
    ids = [model.id for model in oai.models.list()]
    assert set(served_models().values()) <= set(ids)
    assert {"auto", "small", "large"} <= set(ids)
    assert oai.models.retrieve(served_models()["large"]).tier == "large"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-imaginary")


# --- validation, through the Flask test client (nothing is queued) ----------------------------

USER = [{"role": "user", "content": "hi"}]
BAD_BODIES = [
    ({"messages": USER}, "model"),
    ({"model": "auto"}, "messages"),
    ({"model": "auto", "messages": "hi"}, "messages"),
    ({"model": "auto", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": "auto", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "auto", "messages": [{"role": "user", "content": "  "}]}, "messages"),
    ({"model": "auto", "messages": [{"role": "system", "content": "be nice"}]}, "messages"),
    ({"model": "auto", "messages": USER, "max_tokens": 1025}, "max_tokens"),
    ({"model": "auto", "messages": USER, "max_tokens": "5"}, "max_tokens"),
    ({"model": "auto", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "auto", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "auto", "messages": USER, "n": 5}, "n"),
    ({"model": "auto", "messages": USER, "top_logprobs": 2}, "top_logprobs"),
]


def assert_openai_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize("body,param", BAD_BODIES)
def test_bad_bodies_get_openai_shaped_400s(client, body, param):
    before = _queued_messages()
    error = assert_openai_error(client.post("/v1/chat/completions", json=body), 400)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert _queued_messages() == before


def test_text_parts_are_accepted_as_content(client):
    from webapp.openai_schemas import ChatCompletionRequestSchema

    body = {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi "},
                                                                       {"type": "text", "text": "there"}]}]}
    assert ChatCompletionRequestSchema().load(body)["messages"][0]["content"] == "hi there"


def test_protocol_errors_on_openai_paths_use_openai_shape(client):
    assert_openai_error(client.get("/v1/chat/completions"), 405)
    error = assert_openai_error(client.post("/v1/chat/completions", data="{", content_type="application/json"), 400)
    assert error["code"] == "invalid_request"
    assert_openai_error(client.post("/v1/chat/completions", data=json.dumps({}), content_type="text/plain"), 415)


def test_other_endpoints_keep_their_own_error_shape(client):
    assert set(client.get("/v1/jobs/nope").get_json()["error"]) == {"code", "message"}
