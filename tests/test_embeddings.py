"""`POST /v1/embeddings`: validation through the Flask test client (no worker, nothing queued), then
the official `openai` client against a live gunicorn and the routing worker's embedder."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from helpers import app_with, broker, job_store, new_api_key, tenants
from routing.embedder import Embedder
from settings import Settings, get_settings, load_settings
from test_api_validation import _queued_messages

ROOT = Path(__file__).resolve().parent.parent

PATH = "/v1/embeddings"
MODEL = get_settings().embedding_model_id()
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def body(**fields) -> dict:
    return {"model": MODEL, "input": ["hello"], **fields}


def assert_openai_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    error = response.get_json()["error"]
    assert OPENAI_ERROR_KEYS <= set(error) and "fields" not in error, error
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    return error


def never_queuing_client(**changes):
    """A client whose app refuses to queue (ROUTING_MAX_DEPTH=0): a request that passes validation gets
    429 `queue_full`, the control that shows a value just inside a limit is accepted."""
    return app_with(routing_max_depth=0, **changes).test_client()


# --- validation: 4xx in OpenAI's shape, nothing queued ------------------------------------------------------------

BAD_BODIES = [
    ({"input": "hi"}, "model"),
    ({"model": MODEL}, "input"),
    (body(input=None), "input"),
    (body(input=5), "input"),
    (body(input={"text": "hi"}), "input"),
    (body(input=[]), "input"),
    (body(input=""), "input"),
    (body(input=["fine", ""]), "input[1]"),
    (body(input=["fine", None]), "input[1]"),
    (body(input=["x"] * 257), "input"),
    (body(input=["x" * 8001]), "input[0]"),
    (body(input="x" * 8001), "input"),
    (body(encoding_format="int8"), "encoding_format"),
    (body(encoding_format=1), "encoding_format"),
    (body(dimensions=256), "dimensions"),
    (body(dimensions=385), "dimensions"),
    (body(dimensions="384"), "dimensions"),
    (body(dimensions=True), "dimensions"),
    (body(user=5), "user"),
    (body(temperature=0.5), "temperature"),
]


@pytest.mark.parametrize("request_body,param", BAD_BODIES)
def test_bad_bodies_get_openai_shaped_400s(client, request_body, param):
    before = _queued_messages()
    error = assert_openai_error(client.post(PATH, json=request_body), 400, "invalid_request")
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert _queued_messages() == before


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2], [3]]])
def test_token_arrays_are_refused_naming_input(client, tokens):
    error = assert_openai_error(client.post(PATH, json=body(input=tokens)), 400, "invalid_request")
    assert error["param"] == "input" and "token arrays are not supported; send text" in error["message"]


def test_an_unknown_model_is_404_model_not_found(client):
    before = _queued_messages()
    error = assert_openai_error(client.post(PATH, json=body(model="text-embedding-3-small")), 404, "model_not_found")
    assert error["param"] == "model" and MODEL in error["message"]
    assert _queued_messages() == before


def test_protocol_errors_are_openai_shaped(client):
    assert_openai_error(client.post(PATH, data=json.dumps(body()), content_type="text/plain"), 415,
                        "unsupported_media_type")
    assert_openai_error(client.post(PATH, data="{", content_type="application/json"), 400, "invalid_request")
    assert_openai_error(client.post(PATH, data="[1]", content_type="application/json"), 400, "invalid_request")
    assert_openai_error(client.get(PATH), 405, "method_not_allowed")


def test_the_limits_come_from_the_settings():
    client = never_queuing_client(embedding_max_inputs=3, prompt_max_chars=20)
    assert_openai_error(client.post(PATH, json=body(input=["a", "b", "c"])), 429, "queue_full")
    error = assert_openai_error(client.post(PATH, json=body(input=["a", "b", "c", "d"])), 400, "invalid_request")
    assert error["param"] == "input" and "1 to 3" in error["message"]
    assert_openai_error(client.post(PATH, json=body(input=["x" * 20] * 3)), 429, "queue_full")  # per text
    error = assert_openai_error(client.post(PATH, json=body(input=["ok", "x" * 21])), 400, "invalid_request")
    assert error["param"] == "input[1]" and "20 characters" in error["message"]


def test_each_text_is_checked_against_the_prompt_token_limit():
    from webapp.tokens import prompt_tokens

    inside, over = "alpha beta", " ".join(["alpha beta"] * 3)
    limit = prompt_tokens(inside)
    if not limit:
        pytest.skip("no local tokenizer (run `make models`): texts cannot be counted in tokens")
    client = never_queuing_client(prompt_max_tokens=limit)
    error = assert_openai_error(client.post(PATH, json=body(input=[inside, over])), 400, "invalid_request")
    assert error["param"] == "input[1]" and f"{limit} tokens" in error["message"]
    assert_openai_error(client.post(PATH, json=body(input=[inside] * 5)), 429, "queue_full")


def test_every_accepted_value_gets_past_validation():
    client = never_queuing_client()
    for accepted in (body(), body(input="one string"), body(input=["x"] * 256), body(encoding_format="base64"),
                     body(encoding_format=None), body(dimensions=384), body(dimensions=None), body(user="someone")):
        assert_openai_error(client.post(PATH, json=accepted), 429, "queue_full")


def test_a_spent_request_deadline_is_504_without_queueing():
    before = _queued_messages()
    client = app_with(wait_timeout_s=1e-9).test_client()
    assert_openai_error(client.post(PATH, json=body()), 504, "timeout")
    assert _queued_messages() == before


OUTAGE_SCRIPT = """
import json, subprocess, sys, time
if sys.argv[2] == "gevent":
    from gevent import monkey
    monkey.patch_all()
import redis
from kombu.exceptions import OperationalError
from settings import get_settings
from webapp.broker import Broker, EmbeddingTimeout

port = int(sys.argv[1])
command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]

def started():
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):  # until it answers, not for a fixed time
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")

def outcome(broker):
    try:
        broker.embed(["hi"], 0.5)
        return "ok"
    except EmbeddingTimeout:
        return "timeout"
    except OperationalError:
        return "unavailable"
    except Exception as exc:
        return type(exc).__name__

server = started()
broker = Broker(get_settings().replace(redis_url=f"redis://127.0.0.1:{port}/0"))
seen = [outcome(broker)]
server.kill(); server.wait()
seen += [outcome(broker), outcome(broker)]
server = started()
seen += [outcome(broker), outcome(broker)]
server.kill(); server.wait()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_a_lost_result_store_is_a_broker_outage_and_heals(mode):
    """Once Redis has gone, Celery's result consumer fails to reconnect and raises a bare RuntimeError
    ("the application must be restarted"), which would be a 500; under gevent (the web app's worker
    class) its drainer greenlet then keeps raising it even after Redis is back. The broker raises the
    error the app maps to 503, as for every outage, and waits through a new consumer once Redis is back.
    Run in a process of its own: gevent patches the whole process."""
    import subprocess
    import sys

    from helpers import free_port

    done = subprocess.run([sys.executable, "-c", OUTAGE_SCRIPT, str(free_port()), mode], capture_output=True,
                          text=True, timeout=120, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # no worker here: a live result store means a timeout; at most one 503 after Redis is back
    assert seen[0] == "timeout" and seen[1:3] == ["unavailable", "unavailable"], seen
    assert seen[4] == "timeout" and seen[3] in ("timeout", "unavailable"), seen


def test_the_model_entry_and_its_id_follow_the_settings():
    from webapp.embeddings import embedding_model_entries

    assert embedding_model_entries(Settings()) == [{"id": "all-MiniLM-L6-v2", "object": "model", "created": 0,
                                                    "owned_by": "local", "tier": "embedding", "dimensions": 384}]
    custom = load_settings({"EMBEDDING_MODEL": "/srv/models/my-minilm/", "EMBEDDING_MAX_INPUTS": "8"})
    assert embedding_model_entries(custom)[0]["id"] == "my-minilm" and custom.embedding_max_inputs == 8
    with pytest.raises(ValueError, match="EMBEDDING_MAX_INPUTS"):
        load_settings({"EMBEDDING_MAX_INPUTS": "0"})


def test_the_openapi_description_has_every_parameter_with_its_live_limits():
    from webapp.embeddings import document
    from webapp.openapi import ErrorSchema

    spec = APISpec(title="t", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.schema("Error", schema=ErrorSchema)
    document(spec, {"security": [{"apiKey": []}]}, get_settings().replace(embedding_max_inputs=7))
    described = spec.to_dict()
    request = described["components"]["schemas"]["EmbeddingRequest"]
    assert set(request["properties"]) == {"model", "input", "encoding_format", "dimensions", "user"}
    assert set(request["required"]) == {"model", "input"} and request["additionalProperties"] is False
    as_list = request["properties"]["input"]["oneOf"][1]
    assert as_list["maxItems"] == 7 and as_list["items"]["maxLength"] == get_settings().prompt_max_chars
    assert request["properties"]["dimensions"]["enum"][0] == 384
    operation = described["paths"][PATH]["post"]
    assert operation["security"] == [{"apiKey": []}] and {"200", "400", "404", "504"} <= set(operation["responses"])


def test_count_tokens_uses_the_embedding_tokenizer_without_loading_the_model():
    embedder = Embedder()
    assert embedder.count_tokens(["hello world"]) == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens(["hello world", "hello"]) == 7 and embedder.count_tokens([]) == 0
    assert embedder.count_tokens(["word " * 1000]) == 256  # cut where the model cuts (max_seq_length)
    assert embedder._model is None


# --- through gunicorn, the routing worker and the official client -------------------------------------------------

@pytest.fixture(scope="module")
def oai(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server}/v1", api_key="unused", max_retries=0, timeout=60)


def vectors_of(response) -> np.ndarray:
    assert [item.index for item in response.data] == list(range(len(response.data)))
    return np.array([item.embedding for item in response.data], dtype=np.float32)


def test_the_default_base64_answer_decodes_to_unit_vectors(oai):
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?",
             "The volcano erupted last night.", "How do I reset my password?"]
    response = oai.embeddings.create(model=MODEL, input=texts)  # the client asks for base64 and decodes it
    assert response.object == "list" and response.model == MODEL
    vectors = vectors_of(response)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[3]), "the same text gave different vectors"
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3, "a paraphrase is not closer than an unrelated text"
    assert response.usage.prompt_tokens > 4 * 2 and response.usage.total_tokens == response.usage.prompt_tokens


def test_float_and_base64_carry_the_same_float32_values(oai, live_server):
    text = "Explain how a binary search works."
    as_float = oai.embeddings.create(model=MODEL, input=text, encoding_format="float")
    assert len(as_float.data) == 1 and len(as_float.data[0].embedding) == 384
    raw = requests.post(f"{live_server}{PATH}", json={"model": MODEL, "input": text, "encoding_format": "base64"},
                        timeout=60).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(np.array(as_float.data[0].embedding, dtype=np.float32), decoded)
    assert raw["usage"] == {"prompt_tokens": as_float.usage.prompt_tokens, "total_tokens": as_float.usage.total_tokens}


def test_a_batch_comes_back_in_order_and_matches_the_embedder_in_process(oai):
    texts = [f"Sentence number {i} is about topic {i % 5}." for i in range(20)]
    vectors = vectors_of(oai.embeddings.create(model=MODEL, input=texts, encoding_format="float"))
    expected = Embedder(settings=get_settings()).encode(texts)
    cosines = np.sum(vectors * expected, axis=1)
    assert vectors.shape == (20, 384) and cosines.min() > 0.9999, cosines


def test_the_clients_errors_name_the_parameter(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model=MODEL, input="hi", dimensions=256)
    assert caught.value.param == "dimensions"
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    assert caught.value.param == "input"
    with pytest.raises(openai.NotFoundError) as caught:
        oai.embeddings.create(model="text-embedding-3-small", input="hi")
    assert caught.value.code == "model_not_found"


def test_the_model_is_listed(oai):
    assert oai.models.retrieve(MODEL).dimensions == 384
    assert MODEL in [model.id for model in oai.models.list()]


@pytest.fixture(scope="module")
def keyed_client():
    return app_with(api_keys_required=True, rate_limit="1000/minute", read_rate_limit="1000/minute").test_client()


def test_usage_is_counted_for_the_callers_key(keyed_client, workers):
    key, record = new_api_key("embedder")
    headers = {"Authorization": f"Bearer {key}"}
    assert keyed_client.post(PATH, json=body()).status_code == 401
    answer = keyed_client.post(PATH, json=body(input=["count", "my tokens"]), headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    tokens = answer.get_json()["usage"]["prompt_tokens"]
    assert tokens == Embedder().count_tokens(["count", "my tokens"]) > 4  # the special tokens are counted
    today = keyed_client.get("/v1/usage", headers=headers).get_json()["days"][-1]
    assert (today["requests"], today["prompt_tokens"], today["completion_tokens"]) == (1, tokens, 0)


def test_a_spent_budget_refuses_embeddings_before_anything_queues(keyed_client):
    key, record = new_api_key("frugal embedder", monthly_token_budget=10)
    tenants().meter.record(record["id"], prompt_tokens=10)
    before = _queued_messages()
    refused = keyed_client.post(PATH, json=body(), headers={"Authorization": f"Bearer {key}"})
    assert_openai_error(refused, 429, "budget_exceeded")
    assert _queued_messages() == before


def test_results_are_not_left_in_redis_and_failures_and_timeouts_are_told_apart(workers):
    from webapp.broker import EmbeddingFailed, EmbeddingTimeout

    redis = job_store().redis
    keys_before = set(redis.scan_iter("celery-task-meta-*"))
    result = broker().embed(["left behind?"], timeout_s=30)
    assert len(result["data"]) == 1 and len(result["data"][0]) == 384 and result["model"] == MODEL
    with pytest.raises(EmbeddingFailed, match="ValueError"):  # the worker's own guard: no texts
        broker().embed([], timeout_s=30)
    with pytest.raises(EmbeddingTimeout):
        # expired before any worker can take it: the worker drops it (REVOKED) instead of computing it
        broker().embed(["too late"], timeout_s=1e-6)
    time.sleep(0.5)
    left = [json.loads(redis.get(key))["status"] for key in set(redis.scan_iter("celery-task-meta-*")) - keys_before]
    assert set(left) <= {"REVOKED"}, left
