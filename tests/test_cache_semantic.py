"""The semantic cache on real parts: the routing worker answers a paraphrase from the cache."""
from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from cache.index import BoundedIndex
from helpers import job_store, semantic_cache, wait_for_job
from cache.vectors import VectorMirror
from conftest import TEST_REDIS_URL

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture()
def fresh_cache():
    semantic_cache().index.clear()
    yield semantic_cache()
    semantic_cache().index.clear()


def generate_and_cache(client, cache, prompt: str, **fields) -> dict:
    """Run a job through generation and wait until its answer is in the semantic index."""
    before = cache.index.size()
    view = wait_for_job(client, client.post("/v1/jobs", json={"prompt": prompt, "max_tokens": 4, **fields})
                        .get_json()["id"])
    assert view["result"]["cached"] is False
    deadline = time.time() + 30
    while cache.index.size() == before:
        assert time.time() < deadline, "the answer was not stored"
        time.sleep(0.1)
    return view


def test_a_paraphrase_is_answered_without_generation(client, fresh_cache):
    first = generate_and_cache(client, fresh_cache, "How do refrigerators work?")
    response = client.post("/v1/jobs", json={"prompt": "how does a refrigerator work", "max_tokens": 4})
    assert response.status_code == 202, "the exact cache must not match a reworded prompt"
    view = wait_for_job(client, response.get_json()["id"])
    result = view["result"]
    assert result["cached"] == "semantic"
    assert result["response"] == first["result"]["response"]
    assert result["similarity"] >= fresh_cache.threshold
    assert view["routing"]["intent"] == result["intent"] and "rule" in result["routing"]
    assert result["tier"] == first["result"]["tier"]
    assert "generation_started_at" not in job_store().get(view["id"])


def test_generate_endpoint_returns_a_semantic_hit(client, fresh_cache):
    generate_and_cache(client, fresh_cache, "What is the speed of light?")
    response = client.post("/generate", json={"prompt": "what's the speed of light", "max_tokens": 4})
    assert response.status_code == 200
    assert response.get_json()["cached"] == "semantic"


def test_a_near_miss_is_generated(client, fresh_cache):
    generate_and_cache(client, fresh_cache, "is it safe to eat raw eggs")
    view = wait_for_job(client, client.post("/v1/jobs", json={"prompt": "is it not safe to eat raw eggs",
                                                              "max_tokens": 4}).get_json()["id"])
    assert view["result"]["cached"] is False


def test_bypass_skips_the_semantic_cache(client, fresh_cache):
    generate_and_cache(client, fresh_cache, "Please explain recursion")
    view = wait_for_job(client, client.post("/v1/jobs", json={"prompt": "explain recursion please",
                                                              "max_tokens": 4, "cache": False}).get_json()["id"])
    assert view["result"]["cached"] is False


def test_mirror_follows_the_bounded_index():
    index = BoundedIndex(redis.Redis.from_url(TEST_REDIS_URL), "test:mirror", ttl_s=60, max_entries=4)
    index.clear()
    try:
        mirror = VectorMirror(index)
        vectors = np.eye(8, dtype=np.float32)
        for i in range(4):
            index.put(f"ns:{i}", {"i": i}, vectors[i].tobytes())
        assert [m for m, _ in mirror.nearest(vectors[1], "ns", k=1)] == ["ns:1"]
        index.put("ns:4", {"i": 4}, vectors[4].tobytes())  # evicts ns:0
        assert mirror.nearest(vectors[4], "ns", k=1) == [("ns:4", pytest.approx(1.0))]
        assert len(mirror) == 5, "an evicted member stays in the copy until found or resynced"
        mirror.forget("ns:0")
        assert "ns:0" not in dict(mirror.nearest(vectors[0], "ns", k=8))
        for i in range(5, 8):
            index.put(f"ns:{i}", {"i": i}, vectors[i].tobytes())
        mirror.nearest(vectors[7], "ns", k=1)  # the copy outgrew the bound: full resync
        mirror.nearest(vectors[7], "ns", k=1)
        assert len(mirror) == 4
        assert sorted(dict(mirror.nearest(vectors[7], "ns", k=8))) == ["ns:4", "ns:5", "ns:6", "ns:7"]
        assert mirror.nearest(vectors[0], "other-namespace") == []
    finally:
        index.clear()
