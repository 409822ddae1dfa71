"""Every sampling, stop, format and probability parameter through the official `openai` client, on the
real model behind a live gunicorn: each must change the answer the way OpenAI and llama-server say."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
import requests

from helpers import job_store

NO_CACHE = {"Cache-Control": "no-cache"}  # each request generates: nothing answered from an earlier one
STORY = [{"role": "user", "content": "Tell me a short story about a brave little robot."}]
REPEAT = [{"role": "user", "content": "Write the word hello twenty times, separated by spaces."}]

# Five schemas of the kinds clients send: flat, enum, nested, array, numbers and booleans.
SCHEMAS = {
    "city": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                              "country": {"type": "string", "maxLength": 24}},
             "required": ["city", "country"], "additionalProperties": False},
    "sentiment": {"type": "object", "properties": {"label": {"enum": ["positive", "negative", "neutral"]},
                                                   "confident": {"type": "boolean"}},
                  "required": ["label", "confident"], "additionalProperties": False},
    "person": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
        "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 20},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["street", "zip"], "additionalProperties": False}},
               "required": ["name", "age", "address"], "additionalProperties": False},
    "shopping": {"type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 3,
                                                            "items": {"type": "string", "maxLength": 12}}},
                 "required": ["items"], "additionalProperties": False},
    "measure": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"enum": ["m", "km", "cm"]},
                                                 "exact": {"type": "boolean"}},
                "required": ["value", "unit", "exact"], "additionalProperties": False},
}
SCHEMA_PROMPTS = {"city": "Name a famous city and its country.", "sentiment": "Classify: 'I loved this film!'",
                  "person": "Invent a person with an address.", "shopping": "List things to buy for a picnic.",
                  "measure": "How long is a football pitch?"}


@pytest.fixture(scope="module")
def oai(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=180)


def chat(oai: openai.OpenAI, messages=STORY, **params):
    params.setdefault("max_tokens", 12)
    return oai.chat.completions.create(model="small", messages=messages, extra_headers=NO_CACHE, **params)


def text(completion) -> str:
    return completion.choices[0].message.content


@pytest.fixture(scope="module")
def greedy_story(oai) -> str:
    return text(chat(oai, temperature=0))


def test_top_k_1_a_tiny_top_p_and_min_p_1_leave_only_the_greedy_token(oai, greedy_story):
    assert text(chat(oai, temperature=1.5, extra_body={"top_k": 1})) == greedy_story
    assert text(chat(oai, temperature=1.5, top_p=1e-9)) == greedy_story
    assert text(chat(oai, temperature=1.5, extra_body={"min_p": 1.0})) == greedy_story


def test_the_same_seed_gives_the_same_answer_and_other_seeds_others(oai):
    first = text(chat(oai, temperature=1.3, seed=1234))
    assert text(chat(oai, temperature=1.3, seed=1234)) == first
    others = {text(chat(oai, temperature=1.3, seed=seed)) for seed in (1, 2, 3)}
    assert len(others | {first}) >= 3, "different seeds drew the same answers"


def test_a_stop_string_ends_the_answer_before_it(oai, greedy_story):
    words = greedy_story.split()
    stop = f" {words[len(words) // 2]}"
    assert stop in greedy_story
    completion = chat(oai, temperature=0, stop=[stop, "@@@"])
    assert text(completion) == greedy_story[:greedy_story.index(stop)]
    assert completion.choices[0].finish_reason == "stop"
    streamed = chat(oai, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text(completion)


@pytest.mark.parametrize("params", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                                    {"extra_body": {"repetition_penalty": 1.8}}], ids=lambda p: str(p)[:20])
def test_penalties_change_a_repetitive_greedy_answer(oai, params):
    plain = text(chat(oai, REPEAT, temperature=0, max_tokens=24))
    penalised = text(chat(oai, REPEAT, temperature=0, max_tokens=24, **params))
    assert penalised != plain


def test_json_object_mode_answers_a_json_object(oai):
    completion = chat(oai, [{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
                      temperature=0, max_tokens=96,
                      response_format={"type": "json_object"})
    assert isinstance(json.loads(text(completion)), dict)


def test_json_schema_answers_always_validate(oai):
    """Five schemas, two sampled answers each: every answer parses and validates (bench/structured.py
    sends 50 requests and measures the grammar's cost)."""
    def ask(name: str):
        return chat(oai, [{"role": "user", "content": SCHEMA_PROMPTS[name]}], temperature=0.9, seed=11, n=2,
                    max_tokens=96, response_format={"type": "json_schema", "json_schema": {
                        "name": name, "schema": SCHEMAS[name], "strict": True}})

    with ThreadPoolExecutor(len(SCHEMAS)) as pool:
        answers = dict(zip(SCHEMAS, pool.map(ask, SCHEMAS)))
    for name, completion in answers.items():
        assert len(completion.choices) == 2
        for choice in completion.choices:
            jsonschema.validate(json.loads(choice.message.content), SCHEMAS[name])
            assert choice.finish_reason == "stop"


def test_logprobs_come_with_each_token_and_its_alternatives(oai, greedy_story):
    completion = chat(oai, temperature=0, logprobs=True, top_logprobs=3)
    assert text(completion) == greedy_story
    content = completion.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == greedy_story
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert [alt.logprob for alt in entry.top_logprobs] == sorted((a.logprob for a in entry.top_logprobs),
                                                                     reverse=True)
        assert entry.top_logprobs[0].token == entry.token, "greedy picks the most likely token"
        assert bytes(entry.bytes).decode() == entry.token
    without = chat(oai, temperature=0)
    assert without.choices[0].logprobs is None


def test_n_answers_side_by_side_streamed_and_not(oai):
    completion = chat(oai, temperature=1.0, seed=5, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert len({c.message.content for c in completion.choices}) >= 2, "each answer draws from its own seed"
    assert completion.usage.completion_tokens <= 3 * 12
    chunks = list(chat(oai, temperature=1.0, seed=6, n=2, stream=True, stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1] and all(texts.values())
    job = job_store().get(chunks[0].id.removeprefix("chatcmpl-"))
    assert [c["text"] for c in job["result"]["choices"]] == [texts[0], texts[1]]
    assert chunks[-1].usage.completion_tokens == job["result"]["tokens"]


def test_legacy_completions_continue_the_prompt_as_it_is(oai):
    prompt = "The capital of France is"
    completion = oai.completions.create(model="small", prompt=prompt, max_tokens=6, temperature=0,
                                        extra_headers=NO_CACHE)
    assert completion.object == "text_completion" and completion.choices[0].text.strip()
    assert completion.usage.completion_tokens <= 6
    job = job_store().get(completion.id.removeprefix("cmpl-"))
    assert job["request"]["raw_prompt"] is True and "messages" not in job["request"]
    echoed = oai.completions.create(model="small", prompt=prompt, max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + completion.choices[0].text
    scored = oai.completions.create(model="small", prompt=prompt, max_tokens=6, temperature=0, logprobs=2,
                                    extra_headers=NO_CACHE)
    logprobs = scored.choices[0].logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text == completion.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.text_offset)
    assert all(len(top) == 2 for top in logprobs.top_logprobs)
    chunks = list(oai.completions.create(model="small", prompt=prompt, max_tokens=6, temperature=0, stream=True,
                                         stream_options={"include_usage": True}, extra_headers=NO_CACHE))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion.choices[0].text
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


@pytest.mark.parametrize("params,param", [
    ({"top_p": 2}, "top_p"), ({"n": 5}, "n"), ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"seed": 2 ** 64}, "seed"),
    ({"presence_penalty": 3}, "presence_penalty"), ({"extra_body": {"top_k": -1}}, "top_k"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 1}}}},
     "response_format"),
])
def test_out_of_range_values_raise_the_clients_bad_request_error(oai, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(oai, **params)
    assert caught.value.param.split(".")[0] == param and caught.value.type == "invalid_request_error"


def test_the_jobs_api_takes_the_same_fields(live_server, greedy_story):
    words = greedy_story.split()
    stop = f" {words[len(words) // 2]}"
    body = {"prompt": STORY[0]["content"], "tier": "small", "max_tokens": 12, "temperature": 1.5, "top_k": 1,
            "stop": [stop], "logprobs": 1, "cache": False}
    result = requests.post(f"{live_server}/generate", json=body, timeout=180).json()
    assert result["response"] == greedy_story[:greedy_story.index(stop)]
    job = job_store().get(result["id"])
    assert job["result"]["finish_reason"] == "stop" and len(job["result"]["logprobs"]) >= 1
    structured = requests.post(f"{live_server}/generate", timeout=180, json={
        "prompt": SCHEMA_PROMPTS["city"], "tier": "small", "max_tokens": 64,
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMAS["city"]}}})
    jsonschema.validate(json.loads(structured.json()["response"]), SCHEMAS["city"])
