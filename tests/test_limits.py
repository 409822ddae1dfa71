"""Every request limit applies on every route that takes a prompt: `/v1/jobs`, `/generate`,
`/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`, with each API's own error shape.

No worker is needed: every test app has ROUTING_MAX_DEPTH=0 and the exact cache off, so a request
that passes validation is refused with 429 `queue_full` instead of being queued. That 429 is the
control showing a request just inside a limit gets past it.
"""
from __future__ import annotations

import json
import uuid

import pytest

from helpers import app_with, broker, job_store
from jobs.queues import queue_depths
from settings import get_settings

JOB_ROUTES = ("/v1/jobs", "/generate")
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"
OPENAI_ROUTES = (CHAT, COMPLETIONS, EMBEDDINGS)
ROUTES = (*JOB_ROUTES, *OPENAI_ROUTES)
EMBEDDING_MODEL = get_settings().embedding_model_id()
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def limited_client(**changes):
    """A test client whose app never queues anything (see the module docstring)."""
    app = app_with(routing_max_depth=0, exact_cache_max_entries=0, **changes)
    return app.test_client()


def word() -> str:
    return uuid.uuid4().hex[:8]


def job_body(prompt: str, **fields) -> dict:
    return {"prompt": prompt, "max_tokens": 4, **fields}


def chat_body(*contents: str, **fields) -> dict:
    roles = ["system"] * (len(contents) - 1) + ["user"]
    return {"model": "auto", "messages": [{"role": r, "content": c} for r, c in zip(roles, contents)], **fields}


def assert_jobs_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message"} <= set(error) and "type" not in error, error
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    return error


def assert_openai_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert OPENAI_ERROR_KEYS <= set(error) and "fields" not in error, error
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    expected_type = "rate_limit_error" if status == 429 else "invalid_request_error"
    assert error["type"] == expected_type
    return error


def body_for(route: str, prompt: str, **fields) -> dict:
    """A request to `route` asking about `prompt`."""
    if route == CHAT:
        return chat_body(prompt, **fields)
    if route == COMPLETIONS:
        return {"model": "auto", "prompt": prompt, **fields}
    if route == EMBEDDINGS:
        return {"model": EMBEDDING_MODEL, "input": [prompt], **fields}
    return job_body(prompt, **fields)


def assert_error(route: str, response, status: int, code: str) -> dict:
    if route in OPENAI_ROUTES:
        return assert_openai_error(response, status, code)
    return assert_jobs_error(response, status, code)


def assert_not_queued(response, route: str) -> None:
    """The control: a request inside every limit reaches backpressure (and is refused there)."""
    assert_error(route, response, 429, "queue_full")


@pytest.fixture(autouse=True)
def nothing_is_queued():
    """Whatever a test sends, the routing queue does not grow."""
    store, options = job_store(), broker().celery.conf.broker_transport_options
    before = queue_depths(store.redis, options)["routing"]
    yield
    assert queue_depths(store.redis, options)["routing"] <= before


def test_these_are_all_the_routes_that_take_a_body():
    app = app_with(routing_max_depth=0)
    posted = {rule.rule for rule in app.url_map.iter_rules() if rule.methods & {"POST", "PUT", "PATCH"}}
    # Feedback takes no prompt: its comment limit and the body cap are tested in tests/test_feedback.py.
    assert posted == set(ROUTES) | {"/v1/jobs/<job_id>/feedback"}, \
        "a new route that takes a body needs the limits tested here"


# --- max_tokens ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", JOB_ROUTES)
def test_max_tokens_limit_on_the_jobs_api(route: str):
    client = limited_client(max_tokens_limit=16)
    error = assert_jobs_error(client.post(route, json=job_body(f"hi {word()}", max_tokens=17)), 400,
                              "invalid_request")
    assert "max_tokens" in error["fields"] and "16" in error["fields"]["max_tokens"][0]
    assert_not_queued(client.post(route, json=job_body(f"hi {word()}", max_tokens=16)), route)


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_limit_on_chat(field: str):
    client = limited_client(max_tokens_limit=16)
    error = assert_openai_error(client.post(CHAT, json=chat_body(f"hi {word()}", **{field: 17})), 400,
                                "invalid_request")
    assert error["param"] == field and "16" in error["message"]
    assert_not_queued(client.post(CHAT, json=chat_body(f"hi {word()}", **{field: 16})), CHAT)


def test_the_default_max_tokens_limit_applies_to_chat():
    client = limited_client()
    limit = get_settings().max_tokens_limit
    assert_openai_error(client.post(CHAT, json=chat_body("hi", max_tokens=limit + 1)), 400, "invalid_request")


# --- Prompt length in tokens and characters ------------------------------------------------------------------------

def token_counts(*texts: str) -> list[int]:
    from webapp.tokens import prompt_tokens

    counts = [prompt_tokens(text) for text in texts]
    if not all(counts):
        pytest.skip("no local tokenizer (run `make models`): prompts cannot be counted in tokens")
    return counts


@pytest.mark.parametrize("route", JOB_ROUTES)
def test_prompt_token_limit_on_the_jobs_api(route: str):
    inside = f"alpha {word()}"
    over = " ".join([inside] * 3)
    limit = token_counts(inside)[0]
    assert token_counts(over)[0] > limit
    client = limited_client(prompt_max_tokens=limit)
    error = assert_jobs_error(client.post(route, json=job_body(over)), 400, "invalid_request")
    assert f"{limit} tokens" in error["fields"]["prompt"][0]
    assert_not_queued(client.post(route, json=job_body(inside)), route)


def test_prompt_token_limit_counts_the_whole_conversation():
    system, user = f"you answer briefly {word()}", f"what is tea {word()}"
    counts = token_counts(system, user)
    limit = max(counts)  # each message fits on its own; together they do not
    client = limited_client(prompt_max_tokens=limit)
    error = assert_openai_error(client.post(CHAT, json=chat_body(system, user)), 400, "invalid_request")
    assert error["param"] == "messages" and f"{limit} tokens" in error["message"]
    assert_not_queued(client.post(CHAT, json=chat_body(user)), CHAT)
    assert_not_queued(client.post(CHAT, json=chat_body(system)), CHAT)


@pytest.mark.parametrize("route", JOB_ROUTES)
def test_prompt_character_limit_on_the_jobs_api(route: str):
    client = limited_client(prompt_max_chars=20)
    error = assert_jobs_error(client.post(route, json=job_body("x" * 21)), 400, "invalid_request")
    assert "20 characters" in error["fields"]["prompt"][0]
    assert_not_queued(client.post(route, json=job_body(word() + "y" * 12)), route)


def test_prompt_character_limit_counts_the_whole_conversation():
    client = limited_client(prompt_max_chars=20)
    system, user = "be brief " + word()[:3], word() + " tea?"  # 12 and 13 characters
    error = assert_openai_error(client.post(CHAT, json=chat_body(system, user)), 400, "invalid_request")
    assert error["param"] == "messages" and "20 characters" in error["message"]
    assert_not_queued(client.post(CHAT, json=chat_body(user)), CHAT)


def test_text_parts_count_towards_the_character_limit():
    client = limited_client(prompt_max_chars=20)
    parts = [{"type": "text", "text": "a" * 11}, {"type": "text", "text": "b" * 11}]
    body = {"model": "auto", "messages": [{"role": "user", "content": parts}]}
    assert_openai_error(client.post(CHAT, json=body), 400, "invalid_request")


# --- Text that is no text, bodies nested too deeply, bodies too large ---------------------------------------------

def test_a_lone_surrogate_is_refused_on_chat():
    client = limited_client()
    raw = '{"model":"auto","messages":[{"role":"user","content":"hi \\ud800"}]}'
    error = assert_openai_error(client.post(CHAT, data=raw, content_type="application/json"), 400,
                                "invalid_request")
    assert error["param"] == "messages" and "Unicode" in error["message"]
    for raw in ('{"model":"auto","messages":[{"role":"system","content":"x \\udfff y"},{"role":"user","content":"hi"}]}',
                '{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"hi \\ud800"}]}]}'):
        assert_openai_error(client.post(CHAT, data=raw, content_type="application/json"), 400, "invalid_request")


@pytest.mark.parametrize("route", JOB_ROUTES)
def test_a_lone_surrogate_is_refused_on_the_jobs_api(route: str):
    client = limited_client()
    raw = '{"prompt": "hi \\ud800", "max_tokens": 4}'
    error = assert_jobs_error(client.post(route, data=raw, content_type="application/json"), 400,
                              "invalid_request")
    assert "Unicode" in error["fields"]["prompt"][0]


def deep_body(route: str, depth: int) -> str:
    nested = "[" * depth + "]" * depth
    if route == CHAT:
        return '{"model": "auto", "messages": ' + nested + '}'
    if route == EMBEDDINGS:
        return '{"model": "x", "input": ' + nested + '}'
    return '{"prompt": ' + nested + '}'


@pytest.mark.parametrize("depth", [900, 1000, 1500, 5000, 30000])
@pytest.mark.parametrize("route", ROUTES)
def test_a_deeply_nested_body_is_a_400_not_a_500(route: str, depth: int):
    client = limited_client()
    response = client.post(route, data=deep_body(route, depth), content_type="application/json")
    assert_error(route, response, 400, "invalid_request")


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_over_the_size_limit_is_a_413(route: str):
    client = limited_client(max_body_bytes=200)
    body = body_for(route, "x" * 300)
    response = client.post(route, data=json.dumps(body), content_type="application/json")
    assert_error(route, response, 413, "payload_too_large")


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_that_is_no_json_object_is_a_400(route: str):
    client = limited_client()
    for raw in ("[1, 2]", '"text"', "{not json"):
        assert_error(route, client.post(route, data=raw, content_type="application/json"), 400, "invalid_request")


@pytest.mark.parametrize("route", [COMPLETIONS, EMBEDDINGS])
def test_prompt_limits_on_completions_and_embeddings(route: str):
    client = limited_client(prompt_max_chars=100, prompt_max_tokens=16)
    for prompt in ("x" * 101, " ".join(["word"] * 30)):
        error = assert_openai_error(client.post(route, json=body_for(route, prompt)), 400, "invalid_request")
        assert error["param"].startswith("prompt" if route == COMPLETIONS else "input"), error
    assert_not_queued(client.post(route, json=body_for(route, f"hi {word()}")), route)


def test_max_tokens_limit_on_completions():
    client = limited_client(max_tokens_limit=16)
    error = assert_openai_error(client.post(COMPLETIONS, json=body_for(COMPLETIONS, "hi", max_tokens=17)), 400,
                                "invalid_request")
    assert error["param"] == "max_tokens"
    assert_not_queued(client.post(COMPLETIONS, json=body_for(COMPLETIONS, f"hi {word()}", max_tokens=16)), COMPLETIONS)


# --- Error shapes -------------------------------------------------------------------------------------------------

def test_jobs_api_validation_errors_have_the_jobs_shape():
    client = limited_client()
    error = assert_jobs_error(client.post("/v1/jobs", json={"prompt": "hi", "tier": "huge", "extra": 1}), 400,
                              "invalid_request")
    assert set(error["fields"]) == {"tier", "extra"}


def test_chat_validation_errors_have_openai_shape():
    client = limited_client()
    response = client.post(CHAT, json=chat_body("hi", temperature=5))
    error = assert_openai_error(response, 400, "invalid_request")
    assert set(error) == OPENAI_ERROR_KEYS
    assert error["param"] == "temperature"


def test_the_rate_limit_covers_the_chat_api_too():
    """One budget per key over every route that queues a job: chat cannot go around /v1/jobs's limit."""
    from helpers import new_api_key

    client = app_with(api_keys_required=True, rate_limit="2/minute", routing_max_depth=0).test_client()
    key, _ = new_api_key("chat-rate-test")
    headers = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/jobs", json={"prompt": "hi"}, headers=headers).status_code == 429  # queue_full
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=chat, headers=headers).status_code == 429  # queue_full
    refused = client.post("/v1/chat/completions", json=chat, headers=headers)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
