"""Jobs are scoped to the key that created them: with API keys on, every job route answers 404 for
another key's job, the recent list shows the caller's own, and an admin key sees everything."""
from __future__ import annotations

import time
import uuid

import pytest

from helpers import app_with, job_store, new_api_key
from helpers import tenants as tenants_
from jobs import control
from jobs.recent import remember_job
from jobs.status import JobStatus


@pytest.fixture(scope="module")
def tenants():
    """A client with keys required, and bearer headers for tenants A and B and an admin."""
    created = {name: new_api_key(f"tenant {name}", admin=name == "admin") for name in ("a", "b", "admin")}
    headers = {name: {"Authorization": f"Bearer {key}"} for name, (key, _) in created.items()}
    key_ids = {name: record["id"] for name, (_, record) in created.items()}
    return app_with(api_keys_required=True).test_client(), headers, key_ids


def job_of(key_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> str:
    """A finished job created with `key_id`, listed among the recent jobs as the web app lists one."""
    job_id = uuid.uuid4().hex
    fields = {"status": status.value, "finished_at": time.time(), "result": {"response": "secret answer"}}
    job_store().create(job_id, {"prompt": "a secret prompt", "max_tokens": 4, "key_id": key_id}, **fields)
    remember_job(job_store(), job_id, 100, owner=key_id)
    return job_id


ROUTES = [("get", "/v1/jobs/{id}"), ("get", "/v1/jobs/{id}/stream"), ("delete", "/v1/jobs/{id}")]


@pytest.mark.parametrize("method,route", ROUTES)
def test_another_keys_job_is_not_found_on_every_job_route(tenants, method, route):
    client, headers, key_ids = tenants
    job_id = job_of(key_ids["a"], JobStatus.GENERATING)
    response = getattr(client, method)(route.format(id=job_id), headers=headers["b"])
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    assert job_store().get(job_id)["status"] == "generating", "B's request changed A's job"


@pytest.mark.parametrize("method,route", ROUTES)
def test_the_owner_and_an_admin_reach_the_job(tenants, method, route):
    client, headers, key_ids = tenants
    for caller in ("a", "admin"):
        job_id = job_of(key_ids["a"], JobStatus.GENERATING if method == "delete" else JobStatus.SUCCEEDED)
        response = getattr(client, method)(route.format(id=job_id), headers=headers[caller])
        body = response.get_data(as_text=True)  # a stream is read to its end (the job has ended)
        assert response.status_code == 200, (caller, body)


def test_every_job_route_refuses_a_missing_key(tenants):
    client, _, key_ids = tenants
    job_id = job_of(key_ids["a"])
    for method, route in ROUTES + [("get", "/v1/jobs")]:
        assert getattr(client, method)(route.format(id=job_id)).status_code == 401


def test_the_recent_list_shows_the_callers_own_jobs(tenants):
    client, headers, key_ids = tenants
    mine, theirs = job_of(key_ids["a"]), job_of(key_ids["b"])
    listed = {name: [job["id"] for job in client.get("/v1/jobs?limit=100", headers=headers[name]).get_json()["jobs"]]
              for name in ("a", "b", "admin")}
    assert mine in listed["a"] and theirs not in listed["a"]
    assert theirs in listed["b"] and mine not in listed["b"]
    assert {mine, theirs} <= set(listed["admin"])


def test_a_submitted_job_belongs_to_its_key(tenants):
    client, headers, _ = tenants
    created = client.post("/v1/jobs", json={"prompt": "whose job is this?", "max_tokens": 2, "cache": False},
                          headers=headers["a"])
    assert created.status_code == 202
    job_id = created.get_json()["id"]
    try:
        assert client.get(f"/v1/jobs/{job_id}", headers=headers["b"]).status_code == 404
        assert job_id in [job["id"] for job in client.get("/v1/jobs", headers=headers["a"]).get_json()["jobs"]]
    finally:  # no worker runs in this layer: the job must not wait in the queue for a later one
        assert client.delete(f"/v1/jobs/{job_id}", headers=headers["a"]).status_code == 200


def limited_key(**limits) -> dict:
    key, _ = new_api_key("limited tenant", **limits)
    return {"Authorization": f"Bearer {key}"}


def test_a_key_past_its_cap_of_jobs_in_flight_gets_429_until_one_ends(tenants):
    client, _, _ = tenants
    headers = limited_key(max_in_flight=2)
    body = {"prompt": "count me", "max_tokens": 2, "cache": False}
    first, second = (client.post("/v1/jobs", json=body, headers=headers).get_json()["id"] for _ in range(2))
    try:
        refused = client.post("/v1/jobs", json=body, headers=headers)
        assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "too_many_jobs"
        assert int(refused.headers["Retry-After"]) > 0
        assert client.delete(f"/v1/jobs/{first}", headers=headers).status_code == 200  # one ends
        third = client.post("/v1/jobs", json=body, headers=headers)
        assert third.status_code == 202
        assert client.delete(f"/v1/jobs/{third.get_json()['id']}", headers=headers).status_code == 200
    finally:
        client.delete(f"/v1/jobs/{second}", headers=headers)


def test_a_key_runs_its_jobs_at_its_priority_ceiling_at_most(tenants):
    client, _, _ = tenants
    headers = limited_key(max_priority=3)
    created = client.post("/v1/jobs", json={"prompt": "urgent!", "max_tokens": 2, "priority": 9, "cache": False},
                          headers=headers)
    job_id = created.get_json()["id"]
    try:
        assert job_store().get(job_id)["request"]["priority"] == 3
    finally:
        client.delete(f"/v1/jobs/{job_id}", headers=headers)


def test_reads_have_a_rate_limit_of_their_own():
    """GETs and cancels count against READ_RATE_LIMIT, not against the submission budget."""
    client = app_with(api_keys_required=True, read_rate_limit="3/minute", rate_limit="100/minute").test_client()
    headers = limited_key()
    job_id = job_of(tenants_().keys.lookup(headers["Authorization"].split()[1])["id"])
    codes = [client.get(f"/v1/jobs/{job_id}", headers=headers).status_code for _ in range(3)]
    refused = client.get("/v1/jobs", headers=headers)
    assert codes == [200] * 3
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "rate_limited"
    submitted = client.post("/v1/jobs", json={"prompt": "still mine", "max_tokens": 2, "cache": False},
                            headers=headers)
    assert submitted.status_code == 202, "the read budget is apart from the submission budget"
    control.cancel_job(job_store(), job_store().get(submitted.get_json()["id"]))  # no worker runs in this layer


def test_a_key_at_its_cap_still_gets_answers_from_the_cache(tenants):
    """The cap counts jobs that need a worker: a cached answer is served to a key at its cap."""
    from helpers import exact_cache
    from webapp.schemas import JobRequestSchema

    client, _, _ = tenants
    headers = limited_key(max_in_flight=1)
    key_id = tenants_().keys.lookup(headers["Authorization"].split()[1])["id"]
    body = {"prompt": f"cached for {key_id}?", "max_tokens": 2}
    routing = {"intent": "factual", "tier": "small", "score": 0.9, "rule": "matched"}
    exact_cache().index.put(exact_cache().key({**JobRequestSchema().load(body), "key_id": key_id}),
                            {"response": "Yes.", "model_used": "m", "tier": "small", "intent": "factual",
                             "score": 0.9, "routing": routing, "tokens": 1, "finish_reason": "stop"})
    running = client.post("/v1/jobs", json={"prompt": "keep me busy", "max_tokens": 2, "cache": False},
                          headers=headers).get_json()["id"]
    try:
        assert client.post("/v1/jobs", json={"prompt": "anything else", "max_tokens": 2, "cache": False},
                           headers=headers).status_code == 429
        hit = client.post("/v1/jobs", json=body, headers=headers)
        assert hit.status_code == 200 and hit.get_json()["result"]["response"] == "Yes."
    finally:
        client.delete(f"/v1/jobs/{running}", headers=headers)


def test_parallel_submissions_cannot_slip_past_the_cap(tenants):
    """The cap is reserved in one Redis step: of 12 submissions at once, exactly the cap's worth queue."""
    from concurrent.futures import ThreadPoolExecutor

    client, _, _ = tenants
    headers = limited_key(max_in_flight=3)
    body = {"prompt": "all at once", "max_tokens": 2, "cache": False}
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(lambda _: client.application.test_client().post("/v1/jobs", json=body,
                                                                                 headers=headers), range(12)))
    accepted = [response.get_json()["id"] for response in responses if response.status_code == 202]
    try:
        assert len(accepted) == 3, [response.status_code for response in responses]
        assert {response.status_code for response in responses} == {202, 429}
    finally:
        for job_id in accepted:
            client.delete(f"/v1/jobs/{job_id}", headers=headers)
