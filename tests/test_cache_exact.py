"""The exact cache on real parts: the web app answers a repeat without queueing; bypasses and bounds."""
from __future__ import annotations

import time

import pytest
import redis

from helpers import exact_cache, job_store, semantic_cache, wait_for_job, wait_until_cached
from cache.index import BoundedIndex
from conftest import TEST_REDIS_URL
from webapp.schemas import JobRequestSchema

BODY = {"prompt": "Name a primary color.", "max_tokens": 4, "tier": "small"}


@pytest.fixture()
def fresh_cache():
    """An empty exact cache, and an empty semantic one so that it cannot answer first."""
    for cache in (exact_cache(), semantic_cache()):
        cache.index.clear()
    yield exact_cache()
    for cache in (exact_cache(), semantic_cache()):
        cache.index.clear()


@pytest.fixture()
def answered(workers, client, fresh_cache):
    """BODY generated once, and its answer in the cache."""
    view = wait_for_job(client, client.post("/v1/jobs", json=BODY).get_json()["id"])
    assert view["status"] == "succeeded" and view["result"]["cached"] is False
    wait_until_cached(BODY)
    return view


def test_a_repeat_is_answered_by_the_web_app_without_queueing(client, answered):
    response = client.post("/v1/jobs", json={**BODY, "prompt": "  name a PRIMARY   color  "})
    assert response.status_code == 200
    view = response.get_json()
    assert view["status"] == "succeeded"
    assert view["result"]["cached"] == "exact"
    assert view["result"]["response"] == answered["result"]["response"]
    assert view["tier"] == "small" and view["result"]["model_used"] == answered["result"]["model_used"]
    assert client.get(f"/v1/jobs/{view['id']}").get_json()["result"]["cached"] == "exact"
    record = job_store().get(view["id"])
    assert "routing_started_at" not in record, "a routing task ran for a cache hit"
    assert job_store().redis.exists(f"celery-task-meta-{view['id']}") == 0


def test_generate_answers_a_repeat_from_the_cache(client, answered):
    response = client.post("/generate", json=BODY)
    assert response.status_code == 200
    body = response.get_json()
    assert body["cached"] == "exact"
    assert body["response"] == answered["result"]["response"]
    assert body["routing"]["tier"] == "small"


@pytest.mark.parametrize("how", ["field", "header"])
def test_bypass_generates_afresh(client, answered, how):
    body, headers = (({**BODY, "cache": False}, {}) if how == "field"
                     else (BODY, {"Cache-Control": "no-cache"}))
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202
    view = wait_for_job(client, response.get_json()["id"])
    assert view["result"]["cached"] is False


@pytest.mark.parametrize("change", [{"max_tokens": 3}, {"tier": "large"}])
def test_settings_that_change_the_answer_are_part_of_the_key(client, answered, change):
    body = {**BODY, **change}
    assert exact_cache().key(JobRequestSchema().load(body)) != exact_cache().key(JobRequestSchema().load(BODY))
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202
    assert wait_for_job(client, response.get_json()["id"])["result"]["cached"] is False


def test_sampled_answers_are_not_cached(workers, client, fresh_cache):
    body = {**BODY, "temperature": 0.7}
    view = wait_for_job(client, client.post("/v1/jobs", json=body).get_json()["id"])
    assert view["status"] == "succeeded"
    time.sleep(0.5)
    assert fresh_cache.index.get(fresh_cache.key(JobRequestSchema().load(body))) is None
    again = client.post("/v1/jobs", json=body)
    assert again.status_code == 202
    wait_for_job(client, again.get_json()["id"])


@pytest.mark.parametrize("value", ["no", 0, None])
def test_cache_field_must_be_a_boolean(client, value):
    response = client.post("/v1/jobs", json={**BODY, "cache": value})
    assert response.status_code == 400
    assert "cache" in response.get_json()["error"]["fields"]


@pytest.fixture()
def index():
    bounded = BoundedIndex(redis.Redis.from_url(TEST_REDIS_URL), "test:bounded", ttl_s=60, max_entries=3)
    bounded.clear()
    yield bounded
    bounded.clear()


def test_index_evicts_the_oldest_beyond_its_size(index):
    for i in range(5):
        index.put(f"m{i}", {"n": i}, vector=b"\x00" * 8)
    assert [m for m, _ in index.all_members()] == ["m2", "m3", "m4"]
    assert index.get("m0") is None and index.get("m4") == {"n": 4}
    assert index.redis.hlen(index.vectors_key) == 3


def test_index_drops_expired_entries(index):
    index.ttl_s = 1
    index.put("old", {"n": 0})
    time.sleep(1.2)
    index.put("new", {"n": 1})
    assert [m for m, _ in index.all_members()] == ["new"]
    assert index.get("old") is None
