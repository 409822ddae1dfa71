"""Sampling, stop and structured-output parameters without a worker: validation on every route,
what a job carries, the cache key, stop strings, and the OpenAPI document."""
from __future__ import annotations

import json

import pytest

from cache.keys import deterministic, exact_key, semantic_namespace
from engines.base import GenerationChunk
from engines.stops import StopMatcher
from helpers import app_with
from webapp.openai_format import legacy_logprobs
from webapp.grammar import MAX_REPEAT, grammar_for
from webapp.sampling import sampling_job_fields

USER = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                           "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}

# (field, out-of-range value) for every route that generates
OUT_OF_RANGE = [
    ("top_p", 1.5), ("top_p", -0.1), ("top_k", -1), ("top_k", 1001), ("top_k", 2.5), ("min_p", 1.1),
    ("presence_penalty", 2.5), ("frequency_penalty", -2.1), ("repetition_penalty", 0), ("repetition_penalty", 2.5),
    ("seed", "42"), ("seed", 2 ** 64), ("stop", ["a", "b", "c", "d", "e"]), ("stop", [""]), ("stop", 5),
    ("stop", "x" * 201), ("n", 0), ("n", 5), ("response_format", {"type": "xml"}),
    ("response_format", {"type": "json_schema"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": SCHEMA}}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}),
    ("response_format", {"type": "text", "json_schema": {"name": "x", "schema": SCHEMA}}),
]


@pytest.mark.parametrize("field,value", OUT_OF_RANGE)
def test_out_of_range_values_are_openai_shaped_400s_on_chat(client, field, value):
    response = client.post("/v1/chat/completions", json={"model": "auto", "messages": USER, field: value})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].split(".")[0] == field, error


@pytest.mark.parametrize("field,value", OUT_OF_RANGE)
def test_out_of_range_values_are_400s_on_completions(client, field, value):
    response = client.post("/v1/completions", json={"model": "auto", "prompt": "Once upon", field: value})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"].split(".")[0] == field


@pytest.mark.parametrize("field,value", [(f, v) for f, v in OUT_OF_RANGE if f != "n"] + [("n", 5), ("logprobs", 6)])
def test_the_jobs_api_takes_the_same_fields_with_the_same_limits(client, field, value):
    response = client.post("/v1/jobs", json={"prompt": "hi", field: value})
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("body,param", [
    ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": 1}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
])
def test_chat_logprobs_and_logit_bias_limits(client, body, param):
    response = client.post("/v1/chat/completions", json={"model": "auto", "messages": USER, **body})
    assert response.status_code == 400 and response.get_json()["error"]["param"] == param


@pytest.mark.parametrize("body,param", [
    ({"prompt": ["one", "two"]}, "prompt"), ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": " "}, "prompt"),
    ({"prompt": "x", "logprobs": 6}, "logprobs"), ({"prompt": "x", "logprobs": True}, "logprobs"),
    ({"prompt": "x", "suffix": "end"}, "suffix"), ({"prompt": "x", "best_of": 3}, "best_of"),
    ({"prompt": "x", "echo": True, "logprobs": 1}, "echo"), ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
])
def test_completion_specific_limits(client, body, param):
    response = client.post("/v1/completions", json={"model": "auto", **body})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_job_carries_only_the_fields_that_change_something():
    neutral = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
               "repetition_penalty": 1.0, "seed": None, "stop": None, "response_format": {"type": "text"}}
    assert sampling_job_fields(neutral) == {}
    fields = sampling_job_fields({"top_p": 0.9, "seed": 0, "stop": ["\n"], "response_format": {"type": "json_object"}})
    assert fields["top_p"] == 0.9 and fields["seed"] == 0 and fields["stop"] == ["\n"]
    assert "root" in fields["grammar"] and fields["response_format"] == {"type": "json_object"}


def test_a_json_schema_becomes_a_grammar_and_a_bad_one_is_refused():
    grammar = grammar_for(JSON_SCHEMA)
    assert "root ::=" in grammar and "population" in grammar
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        grammar_for({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})


def _job(**fields) -> dict:
    return {"prompt": "hi", "max_tokens": 16, "temperature": 0.0, "tier": "auto", "priority": 5, **fields}


def test_draw_only_fields_leave_a_greedy_answer_and_its_cache_key_alone():
    models = {"small": "s", "large": "l"}
    plain = exact_key(_job(), models)
    assert exact_key(_job(top_p=0.5, top_k=3, min_p=0.2, seed=7), models) == plain
    for changes in ({"presence_penalty": 1.0}, {"repetition_penalty": 1.3}, {"stop": ["."]}, {"n": 2},
                    {"logprobs": 2}, {"grammar": "root ::= \"x\""}, {"raw_prompt": True}):
        assert exact_key(_job(**changes), models) != plain, changes


def test_a_streamed_request_and_one_that_may_not_escalate_share_the_plain_requests_cache_entries():
    # OpenAI streams carry "escalate": false by default (webapp.openai_format): keyed, it would split them off.
    models = {"small": "s", "large": "l"}
    plain = exact_key(_job(), models)
    assert exact_key(_job(stream=True, escalate=False), models) == exact_key(_job(escalate=True), models) == plain
    assert semantic_namespace(_job(escalate=False), "s", "small", 384) == semantic_namespace(_job(), "s", "small", 384)


def test_a_seeded_draw_is_cached_under_its_seed_and_settings():
    models = {"small": "s", "large": "l"}
    assert not deterministic(_job(temperature=0.8))
    seeded = _job(temperature=0.8, seed=1)
    assert deterministic(seeded)
    assert exact_key(seeded, models) != exact_key({**seeded, "seed": 2}, models)
    assert exact_key(seeded, models) != exact_key({**seeded, "top_p": 0.5}, models)


def _feed(matcher: StopMatcher, pieces: list[str], last: str = "length") -> list[GenerationChunk]:
    chunks = [GenerationChunk(p, token=i, finish_reason=last if i == len(pieces) - 1 else None)
              for i, p in enumerate(pieces)]
    out: list[GenerationChunk] = []
    for chunk in chunks:
        out += matcher.feed(chunk)
        if out and out[-1].finish_reason:
            break
    return out


def test_a_stop_string_across_tokens_ends_the_answer_and_is_not_returned():
    out = _feed(StopMatcher(["END"]), ["Hello", " E", "N", "D", " more"])
    assert "".join(c.text for c in out) == "Hello "
    assert out[-1].finish_reason == "stop" and [c.token for c in out if c.token is not None] == [0, 1, 2, 3]


def test_text_that_only_looks_like_a_stop_string_is_released():
    out = _feed(StopMatcher(["END"]), ["Hello", " E", "N", "ough"])
    assert "".join(c.text for c in out) == "Hello ENough" and out[-1].finish_reason == "length"
    assert out[1].text == " ", "the possible start of a stop string was held back"


def test_the_earliest_of_several_stop_strings_wins():
    out = _feed(StopMatcher(["\n\n", "."]), ["One. Two\n\n"])
    assert "".join(c.text for c in out) == "One" and out[-1].finish_reason == "stop"


def test_legacy_logprobs_have_offsets_and_top_dicts():
    entries = [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [{"token": "Hi", "logprob": -0.1}]},
               {"token": " there", "logprob": -1.5, "bytes": [], "top_logprobs": []}]
    legacy = legacy_logprobs(entries, offset=4)
    assert legacy == {"tokens": ["Hi", " there"], "token_logprobs": [-0.1, -1.5],
                      "top_logprobs": [{"Hi": -0.1}, {}], "text_offset": [4, 6]}


def test_an_engine_without_a_feature_refuses_it_naming_the_field():
    mlx = app_with(engine_backend="mlx").test_client()
    for field, value in (("seed", 1), ("response_format", {"type": "json_object"})):
        response = mlx.post("/v1/chat/completions", json={"model": "auto", "messages": USER, field: value})
        assert response.status_code == 400, field
        error = response.get_json()["error"]
        assert error["param"] == field and "not supported" in error["message"].lower()
    ok = mlx.post("/v1/jobs", json={"prompt": "hi", "top_p": 0.5, "repetition_penalty": 1.1, "stop": ["x"]})
    assert ok.status_code != 400


def test_every_parameter_and_endpoint_is_in_the_openapi_document(client):
    document = client.get("/openapi.json").get_json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        assert path in document["paths"], path
    schemas = document["components"]["schemas"]
    shared = {"top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "seed",
              "stop", "response_format", "n"}
    assert shared | {"logprobs", "top_logprobs", "stream_options"} <= set(schemas["ChatCompletionRequest"]["properties"])
    assert shared | {"logprobs", "echo", "prompt"} <= set(schemas["CompletionRequest"]["properties"])
    assert shared | {"logprobs"} <= set(schemas["JobRequest"]["properties"])
    assert json.dumps(schemas["ChatCompletionRequest"]["properties"]["top_p"]).count("maximum")


@pytest.mark.parametrize("schema,why", [
    ({"type": "string", "maxLength": MAX_REPEAT + 1}, "maxLength"),
    ({"type": "array", "items": {"type": "string"}, "minItems": 50_000}, "minItems"),
    ({"type": "string", "pattern": "^a{0,5000}$"}, "pattern"),
    ({"type": "string", "pattern": "^a{,3000}$"}, "pattern"),
    ({"type": "string", "pattern": "^a{0, 3000}$"}, "pattern"),
])
def test_a_schema_whose_grammar_would_be_huge_is_refused_at_the_request(client, schema, why):
    """The converter nests one group per unit of repetition: 50,000 crashed a worker in llama.cpp's
    grammar parser. Such a schema is a 400 naming the reason, before anything is queued."""
    body = {"model": "auto", "messages": USER,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "response_format" and why in error["message"]
    assert len(grammar_for({"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "maxLength": MAX_REPEAT}}})) < 20_000


def test_a_deeply_nested_schema_is_a_400_not_a_500(client):
    schema: dict = {"type": "array"}
    for _ in range(150):
        schema = {"type": "array", "items": schema}
    body = {"model": "auto", "messages": USER,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["param"] == "response_format"


def test_the_web_process_converts_schemas_without_loading_libllama():
    import subprocess
    import sys

    code = ("import sys; from webapp.grammar import grammar_for; "
            "grammar_for({'type': 'json_object'}); print('llama_cpp' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_a_completion_prompt_is_keyed_exactly_as_written():
    models = {"small": "s", "large": "l"}
    raw = _job(prompt="The capital of France is", raw_prompt=True)
    assert exact_key(raw, models) != exact_key({**raw, "prompt": "the capital of france is"}, models)
    assert exact_key(raw, models) != exact_key({**raw, "prompt": "The capital of France is "}, models)
    chat = _job(prompt="What is the capital of France?")
    assert exact_key(chat, models) == exact_key({**chat, "prompt": "what is the capital of france"}, models)


def test_an_end_of_text_token_that_releases_a_stop_string_is_not_counted():
    matcher = StopMatcher(["END"])
    out = list(matcher.feed(GenerationChunk("Hi E", token=1)))
    out += matcher.feed(GenerationChunk("ND", token=2, finish_reason="stop"))
    assert "".join(c.text for c in out) == "Hi "
    assert out[-1].finish_reason == "stop" and all(c.finish_reason is None for c in out[:-1])
    assert sum(c.token is not None and c.finish_reason != "stop" for c in out) == 1


def test_properties_are_written_in_the_schema_s_order():
    schema = {"type": "object", "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"], "additionalProperties": False}
    root = next(line for line in grammar_for({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
                .splitlines() if line.startswith("root ::="))
    assert root.index("zeta") < root.index("alpha")


def test_a_schema_s_name_description_and_strict_flag_leave_the_cache_key_alone():
    models = {"small": "s", "large": "l"}

    def job(**json_schema) -> dict:
        response_format = {"type": "json_schema", "json_schema": {"schema": SCHEMA, **json_schema}}
        return _job(**sampling_job_fields({"response_format": response_format}))

    assert exact_key(job(name="a"), models) == exact_key(job(name="b", strict=True, description="d"), models)
    other = {**SCHEMA, "required": ["city"]}
    assert exact_key(job(name="a"), models) != exact_key(
        _job(**sampling_job_fields({"response_format": {"type": "json_schema",
                                                        "json_schema": {"name": "a", "schema": other}}})), models)


def test_priority_orders_the_queue_and_leaves_the_cache_key_alone():
    models = {"small": "s", "large": "l"}
    assert exact_key(_job(priority=9), models) == exact_key(_job(priority=0), models)
