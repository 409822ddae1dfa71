"""Concurrent encode calls share forward passes and still each get their own vectors."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from routing.embedder import Embedder, routing_embedder
from settings import load_settings

PROMPTS = ["hi there", "prove that sqrt 2 is irrational", "what does CPU stand for",
           "write a haiku about rain", "my docker container exits with code 137, why?",
           "plan a two week trip to peru", "how do i reverse a list in python", "derive the quadratic formula"]


@pytest.fixture(scope="module")
def embedder():
    e = Embedder()
    e.encode(["load the model"])
    return e


def _encode_concurrently(embedder: Embedder, groups: list[list[str]]) -> list[np.ndarray]:
    results: list = [None] * len(groups)
    start = threading.Barrier(len(groups))

    def call(i: int) -> None:
        start.wait()
        results[i] = embedder.encode(groups[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_concurrent_calls_are_merged_and_answered_with_their_own_rows(embedder):
    alone = [embedder.encode([p])[0] for p in PROMPTS]
    groups = [[p] for p in PROMPTS[:6]] + [PROMPTS[6:]]  # one caller sends two texts
    batches_before = embedder.batches
    results = _encode_concurrently(embedder, groups)
    assert embedder.batches - batches_before < len(groups), "concurrent calls were not merged"
    got = np.concatenate(results)
    assert got.shape == (len(PROMPTS), 384)
    np.testing.assert_allclose(got, np.stack(alone), atol=1e-4)


def test_max_batch_one_encodes_each_call_alone(embedder):
    embedder.max_batch = 1
    try:
        batches_before = embedder.batches
        results = _encode_concurrently(embedder, [[p] for p in PROMPTS[:4]])
        assert embedder.batches - batches_before == 4
        assert all(r.shape == (1, 384) for r in results)
    finally:
        embedder.max_batch = 32


def test_a_failed_forward_pass_reaches_every_caller_in_it():
    class Failing:
        def encode(self, *args, **kwargs):
            raise RuntimeError("model fell over")

    embedder = Embedder()
    embedder._model = Failing()  # a broken model cannot be produced on purpose otherwise
    errors = []

    def call() -> None:
        try:
            embedder.encode(["x"])
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == ["model fell over"] * 3


def test_onnx_and_torch_backends_give_the_same_vectors(embedder):
    assert embedder.backend == "onnx", "onnxruntime is the default backend"
    long_prompt = "please explain " + "in great detail " * 40 + "how a compiler works"
    texts = PROMPTS + [long_prompt]
    onnx = embedder.encode(texts)
    torch = Embedder(backend="torch").encode(texts)
    assert onnx.shape == torch.shape == (len(texts), 384)
    assert float((onnx * torch).sum(axis=1).min()) > 0.9999


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="EMBEDDING_BACKEND"):
        Embedder(settings=load_settings({"EMBEDDING_BACKEND": "tensorflow"}))
    with pytest.raises(ValueError, match="ROUTING_EMBEDDING_BACKEND"):
        load_settings({"ROUTING_EMBEDDING_BACKEND": "int4"})


def test_the_routers_int8_graph_stays_close_to_the_models_own_vectors():
    texts = ["hello there", "Prove that the square root of two is irrational, step by step please.",
             "¿cómo invierto una cadena en python?", "write a haiku about autumn rain",
             "my docker container exits with code 137, why?", "merhaba, nasılsın?"]
    exact, int8 = Embedder(backend="onnx").encode(texts), routing_embedder().encode(texts)
    cosines = (exact * int8).sum(axis=1)
    assert routing_embedder().backend == "onnx-int8" and int8.shape == exact.shape
    assert float(cosines.min()) > 0.95 and float(cosines.mean()) > 0.98
    assert float(cosines.max()) < 0.99999, "quantised: not the float graph under another name"
