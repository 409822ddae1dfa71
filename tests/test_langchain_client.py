"""A second real client that nobody here wrote, driven unchanged against the platform's base URL: LangChain's
`ChatOpenAI`, its legacy completions `OpenAI` LLM and `OpenAIEmbeddings` (langchain-openai, pinned in
requirements-test.txt). Every parameter the `openai` client tests in tests/test_openai_params.py must work through
LangChain's documented constructor arguments too; parameters OpenAI does not have (top_k, min_p,
repetition_penalty) go through LangChain's documented `extra_body`."""
from __future__ import annotations

import asyncio
import json

import jsonschema
import numpy as np
import openai
import pytest
import requests
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI, OpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

NO_CACHE = {"Cache-Control": "no-cache"}  # each request generates: nothing answered from an earlier one
STORY = "Tell me a short story about a brave little robot."
REPEAT = "Write the word hello twenty times, separated by spaces."
PROMPT = "Once upon a time, in a small village by the sea,"  # the legacy endpoint continues it as it is
CLIENT = {"api_key": "unused", "max_retries": 0, "timeout": 180, "default_headers": NO_CACHE}

PERSON = {"title": "person", "description": "A person with an address.", "type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 20},
                                                 "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["street", "zip"], "additionalProperties": False}},
    "required": ["name", "age", "address"], "additionalProperties": False}


class City(BaseModel):
    """A city and the country it lies in."""

    city: str = Field(max_length=24)
    country: str = Field(max_length=24)


@pytest.fixture(scope="module")
def base_url(live_server) -> str:
    return f"{live_server}/v1"


def _short_and_greedy(model_class, base_url: str):
    """A factory of `model_class` (LangChain's ChatOpenAI or OpenAI) on the platform: model "small", 12 tokens
    and greedy unless the test says otherwise."""
    def make(**params):
        params.setdefault("max_tokens", 12)
        params.setdefault("temperature", 0)
        return model_class(model="small", base_url=base_url, **{**CLIENT, **params})

    return make


@pytest.fixture(scope="module")
def chat_model(base_url):
    return _short_and_greedy(ChatOpenAI, base_url)


@pytest.fixture(scope="module")
def completion_model(base_url):
    """The legacy completions `OpenAI` LLM."""
    return _short_and_greedy(OpenAI, base_url)


@pytest.fixture(scope="module")
def oai(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=180)


@pytest.fixture(scope="module")
def greedy_story(chat_model) -> str:
    answer = chat_model().invoke(STORY).content
    assert isinstance(answer, str) and answer.strip()
    return answer


def stop_word(answer: str) -> str:
    """A word from the middle of an answer, with the space before it (a stop string found in it)."""
    words = answer.split()
    stop = f" {words[len(words) // 2]}"
    assert stop in answer, answer
    return stop


# --- chat: ChatOpenAI ---------------------------------------------------------------------------------------------

def test_invoke_answers_with_finish_reason_and_token_usage(chat_model, greedy_story, oai):
    message = chat_model().invoke(STORY)
    assert message.content == greedy_story
    metadata = message.response_metadata
    assert metadata["finish_reason"] in ("stop", "length")
    usage = metadata["token_usage"]
    assert 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert message.usage_metadata["output_tokens"] == usage["completion_tokens"]
    assert message.usage_metadata["input_tokens"] == usage["prompt_tokens"]
    assert metadata["model_name"]
    # The same request through the `openai` client (which sends `max_tokens`, LangChain `max_completion_tokens`).
    same = oai.chat.completions.create(model="small", messages=[{"role": "user", "content": STORY}], max_tokens=12,
                                       temperature=0, extra_headers=NO_CACHE)
    assert same.choices[0].message.content == greedy_story
    # The async client and a batch answer alike.
    assert asyncio.run(chat_model().ainvoke(STORY)).content == greedy_story
    assert [m.content for m in chat_model().batch([STORY, STORY])] == [greedy_story, greedy_story]


def test_a_cached_answer_reports_the_same_token_usage(chat_model):
    """Without `Cache-Control: no-cache` a repeated greedy request is answered from the exact cache; its usage
    still counts the prompt (OpenAI's `prompt_tokens` is the prompt's size, cached or not)."""
    cached_model = chat_model(default_headers={})
    prompt = "Name a colour and say why you like it."
    generated = cached_model.invoke(prompt)
    cached = cached_model.invoke(prompt)
    assert cached.content == generated.content
    assert generated.usage_metadata["input_tokens"] > 0
    assert cached.usage_metadata == generated.usage_metadata, "the cache hit's usage forgot the prompt's tokens"
    streamed = sum(cached_model.stream(prompt, stream_usage=True), AIMessageChunk(content=""))
    assert streamed.content == generated.content
    assert streamed.usage_metadata == generated.usage_metadata


def test_top_k_1_a_tiny_top_p_and_min_p_1_leave_only_the_greedy_token(chat_model, greedy_story):
    sampled = {chat_model(temperature=1.5, seed=seed).invoke(STORY).content for seed in (7, 8)}
    assert sampled != {greedy_story}, "temperature 1.5 alone should leave the greedy answer (control)"
    assert chat_model(temperature=1.5, seed=7, extra_body={"top_k": 1}).invoke(STORY).content == greedy_story
    assert chat_model(temperature=1.5, seed=7, top_p=1e-9).invoke(STORY).content == greedy_story
    assert chat_model(temperature=1.5, seed=7, extra_body={"min_p": 1.0}).invoke(STORY).content == greedy_story


def test_the_same_seed_gives_the_same_answer_and_other_seeds_others(chat_model):
    first = chat_model(temperature=1.3, seed=1234).invoke(STORY).content
    assert chat_model(temperature=1.3, seed=1234).invoke(STORY).content == first
    others = {chat_model(temperature=1.3, seed=seed).invoke(STORY).content for seed in (1, 2, 3)}
    assert len(others | {first}) >= 3, "different seeds drew the same answers"


def test_a_stop_string_ends_the_answer_before_it(chat_model, greedy_story):
    stop = stop_word(greedy_story)
    message = chat_model().invoke(STORY, stop=[stop, "@@@"])
    assert message.content == greedy_story[:greedy_story.index(stop)]
    assert message.response_metadata["finish_reason"] == "stop"
    # Set on the model instead of the call (`stop_sequences`, alias of the `stop` field), and streamed.
    streamed = "".join(chunk.content for chunk in chat_model(stop_sequences=[stop]).stream(STORY))
    assert streamed == message.content


@pytest.mark.parametrize("params", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
                                    {"extra_body": {"repetition_penalty": 1.8}}],
                         ids=["frequency_penalty", "presence_penalty", "repetition_penalty"])
def test_penalties_change_a_repetitive_greedy_answer(chat_model, oai, params):
    plain = chat_model(max_tokens=24).invoke(REPEAT).content
    penalised = chat_model(max_tokens=24, **params).invoke(REPEAT).content
    assert penalised != plain
    # The `openai` client sending the same parameter gets the same penalised answer.
    same = oai.chat.completions.create(model="small", messages=[{"role": "user", "content": REPEAT}], max_tokens=24,
                                       temperature=0, extra_headers=NO_CACHE, **params)
    assert same.choices[0].message.content == penalised


def test_structured_output_with_a_pydantic_model_and_a_json_schema(chat_model):
    llm = chat_model(max_tokens=96)
    city = llm.with_structured_output(City, method="json_schema", strict=True).invoke(
        "Name a famous city and its country.")
    assert isinstance(city, City) and city.city and city.country
    result = llm.with_structured_output(PERSON, method="json_schema", strict=True, include_raw=True).invoke(
        "Invent a person with an address.")
    assert result["parsing_error"] is None
    jsonschema.validate(result["parsed"], PERSON)
    assert json.loads(result["raw"].content) == result["parsed"]
    assert result["raw"].response_metadata["finish_reason"] == "stop"
    # Sampled answers validate too: the grammar admits nothing else.
    sampled = chat_model(max_tokens=96, temperature=0.9, seed=11).with_structured_output(
        PERSON, method="json_schema", strict=True).invoke("Invent a person with an address.")
    jsonschema.validate(sampled, PERSON)


def test_json_mode_answers_a_json_object(chat_model):
    answer = chat_model(max_tokens=96).with_structured_output(method="json_mode").invoke(
        "Give a JSON object with a cat's name and age.")
    assert isinstance(answer, dict) and answer


def test_logprobs_come_with_each_token_and_its_alternatives(chat_model, greedy_story):
    message = chat_model(logprobs=True, top_logprobs=2).invoke(STORY)
    assert message.content == greedy_story
    content = message.response_metadata["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == greedy_story
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token"] == entry["token"], "greedy picks the most likely token"
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]
    assert chat_model().invoke(STORY).response_metadata.get("logprobs") is None


def test_n_2_gives_two_generations(chat_model):
    result = chat_model(n=2, temperature=1.0, seed=5).generate([[HumanMessage(STORY)]])
    texts = [generation.text for generation in result.generations[0]]
    assert len(texts) == 2 and all(texts)
    assert texts[0] != texts[1], "each answer draws from its own seed"
    assert result.llm_output["token_usage"]["completion_tokens"] <= 2 * 12


def test_streamed_chunks_join_to_the_answer_and_one_carries_the_usage(chat_model, greedy_story):
    chunks = list(chat_model().stream(STORY))
    assert len(chunks) > 1 and all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert "".join(chunk.content for chunk in chunks) == greedy_story
    with_usage = list(chat_model(stream_usage=True).stream(STORY))
    assert "".join(chunk.content for chunk in with_usage) == greedy_story
    # LangChain yields the usage chunk (the server's `choices: []` chunk) and then an empty closing chunk.
    usages = [chunk.usage_metadata for chunk in with_usage if chunk.usage_metadata]
    assert len(usages) == 1, with_usage
    usage = usages[0]
    assert 0 < usage["output_tokens"] <= 12 and usage["input_tokens"] > 0
    assert usage["output_tokens"] == chat_model().invoke(STORY).usage_metadata["output_tokens"]
    assert not any(chunk.usage_metadata for chunk in chunks), "usage only when asked for (stream_options)"
    joined = sum(with_usage[1:], with_usage[0])
    assert joined.response_metadata["finish_reason"] in ("stop", "length")
    assert joined.usage_metadata["output_tokens"] == usage["output_tokens"]
    # The constructor's `streaming=True` streams behind invoke: the same answer.
    assert chat_model(streaming=True).invoke(STORY).content == greedy_story


# --- legacy completions: OpenAI -------------------------------------------------------------------------------------

def test_the_legacy_llm_continues_the_prompt_with_stop_and_logprobs(completion_model, oai):
    text = completion_model().invoke(PROMPT)
    assert isinstance(text, str) and text.strip()
    same = oai.completions.create(model="small", prompt=PROMPT, max_tokens=12, temperature=0, extra_headers=NO_CACHE)
    assert same.choices[0].text == text
    streamed = "".join(completion_model().stream(PROMPT))
    assert streamed == text

    stop = stop_word(text)
    assert completion_model().invoke(PROMPT, stop=[stop]) == text[:text.index(stop)]

    result = completion_model(logprobs=2).generate([PROMPT])
    generation = result.generations[0][0]
    assert generation.text == text
    logprobs = generation.generation_info["logprobs"]
    assert "".join(logprobs["tokens"]) == text
    assert len(logprobs["token_logprobs"]) == len(logprobs["tokens"]) == len(logprobs["text_offset"])
    assert all(len(top) == 2 for top in logprobs["top_logprobs"])
    assert generation.generation_info["finish_reason"] in ("stop", "length")
    assert 0 < result.llm_output["token_usage"]["completion_tokens"] <= 12


def test_the_legacy_llm_takes_sampling_parameters(completion_model):
    greedy = completion_model().invoke(PROMPT)
    assert completion_model(temperature=1.5, seed=3, extra_body={"top_k": 1}).invoke(PROMPT) == greedy
    first = completion_model(temperature=1.3, seed=99).invoke(PROMPT)
    assert completion_model(temperature=1.3, seed=99).invoke(PROMPT) == first
    two = completion_model(n=2, temperature=1.0, seed=5).generate([PROMPT]).generations[0]
    assert len(two) == 2 and all(g.text for g in two) and two[0].text != two[1].text
    repetitive = "hello hello hello hello hello hello"
    plain = completion_model().invoke(repetitive)
    penalised = completion_model(frequency_penalty=2.0, presence_penalty=2.0).invoke(repetitive)
    assert penalised != plain
    # `echo` is an OpenAI completions parameter without a LangChain field: `model_kwargs` passes it on.
    # (Not compared with `greedy` itself: on some CPUs ggml sums a prompt prefilled beside other requests, or
    # copied from the shared prefix, in another order, and a near tie in a greedy answer may then flip.)
    echoed = completion_model(model_kwargs={"echo": True}).invoke(PROMPT)
    assert echoed.startswith(PROMPT) and echoed[len(PROMPT):].strip(), "the prompt, then its continuation"


# --- embeddings: OpenAIEmbeddings ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedding_model_id(live_server) -> str:
    models = requests.get(f"{live_server}/v1/models", timeout=30).json()["data"]
    return next(model["id"] for model in models if model.get("tier") == "embedding")


def test_embeddings_of_a_query_and_of_documents(base_url, embedding_model_id, oai):
    # `check_embedding_ctx_length=False` is LangChain's documented switch for non-OpenAI providers: raw text is
    # sent instead of tiktoken token ids (tiktoken would also download its encodings; there is no network here).
    embeddings = OpenAIEmbeddings(model=embedding_model_id, base_url=base_url, check_embedding_ctx_length=False,
                                  api_key="unused", max_retries=0, timeout=180)
    query = embeddings.embed_query("A cat sleeps on the sofa.")
    assert len(query) == 384 and all(isinstance(x, float) for x in query)
    texts = ["A cat sleeps on the sofa.", "A kitten naps on the couch.", "Stock markets fell sharply today."]
    documents = embeddings.embed_documents(texts)
    assert len(documents) == 3 and all(len(vector) == 384 for vector in documents)
    vectors = np.array(documents)
    assert np.allclose(vectors[0], query, atol=1e-5)
    cosine = vectors @ vectors.T / np.outer(np.linalg.norm(vectors, axis=1), np.linalg.norm(vectors, axis=1))
    assert cosine[0, 1] > cosine[0, 2], "a paraphrase lies nearer than an unrelated text"
    # The `openai` client without an encoding_format asks for base64; LangChain gets the same floats.
    floats = oai.embeddings.create(model=embedding_model_id, input=texts, encoding_format="float")
    assert np.allclose([item.embedding for item in floats.data], vectors, atol=1e-5)


# --- out of range: the client's own error ------------------------------------------------------------------------

OUT_OF_RANGE = [
    ({"top_p": 2}, "top_p"), ({"n": 5}, "n"), ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
    ({"presence_penalty": 3}, "presence_penalty"), ({"seed": 2 ** 64}, "seed"),
    ({"extra_body": {"top_k": -1}}, "top_k"), ({"extra_body": {"min_p": 2}}, "min_p"),
    ({"temperature": 3}, "temperature"),
]


@pytest.mark.parametrize("params,param", OUT_OF_RANGE, ids=[param for _, param in OUT_OF_RANGE])
def test_out_of_range_values_raise_bad_request_error(chat_model, params, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat_model(**params).invoke(STORY)
    assert caught.value.status_code == 400
    assert caught.value.param.split(".")[0] == param and caught.value.type == "invalid_request_error"


def test_out_of_range_values_on_the_legacy_llm_raise_bad_request_error(completion_model):
    with pytest.raises(openai.BadRequestError) as caught:
        completion_model(logprobs=6).invoke(PROMPT)
    assert caught.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as caught:
        completion_model(best_of=2).invoke(PROMPT)
    assert caught.value.param == "best_of"
    with pytest.raises(openai.BadRequestError):
        completion_model().invoke(PROMPT, stop=["a", "b", "c", "d", "e"])


