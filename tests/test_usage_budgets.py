"""Usage, budgets, fair shares and revocation through the web app (no worker): what a key used is
counted per day and written through to SQL, a spent budget refuses jobs before anything queues, a
key's flood sinks its own priority, a revoked key's jobs stop, and a Redis restart loses no key."""
from __future__ import annotations

import signal
import uuid

import pytest

from helpers import app_with, exact_cache, free_port, job_store, new_api_key, tenants
from jobs import control
from jobs.store import job_key
from tenants.keys import digest
from tenants.meter import usage_month
from webapp.schemas import JobRequestSchema

ROUTING = {"intent": "factual", "tier": "small", "score": 0.9, "rule": "matched"}


@pytest.fixture(scope="module")
def client():
    return app_with(api_keys_required=True, rate_limit="1000/minute", read_rate_limit="1000/minute").test_client()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def queued(client, headers: dict, prompt: str = "count me", **fields) -> dict:
    response = client.post("/v1/jobs", json={"prompt": prompt, "max_tokens": 2, "cache": False, **fields},
                           headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def cancel_all(job_ids) -> None:
    """No worker runs in this layer: queued jobs must not wait for a later session's."""
    for job_id in job_ids:
        record = job_store().get(job_id)
        if record:
            control.cancel_job(job_store(), record)


def cache_answer(key_id: str, prompt: str, response: str = "Yes.") -> dict:
    body = {"prompt": prompt, "max_tokens": 2}
    exact_cache().index.put(exact_cache().key({**JobRequestSchema().load(body), "key_id": key_id}),
                            {"response": response, "model_used": "m", "tier": "small", "intent": "factual",
                             "score": 0.9, "routing": ROUTING, "tokens": 1, "finish_reason": "stop"})
    return body


def test_usage_counts_requests_and_cache_hits_per_key(client):
    key, record = new_api_key("counted")
    other, _ = new_api_key("other")
    job = queued(client, bearer(key))
    body = cache_answer(record["id"], "counted and cached?")
    assert client.post("/v1/jobs", json=body, headers=bearer(key)).status_code == 200
    cancel_all([job["id"]])
    usage = client.get("/v1/usage", headers=bearer(key)).get_json()
    today = usage["days"][-1]
    assert usage["key_id"] == record["id"] and (today["requests"], today["cache_hits"]) == (2, 1)
    assert client.get("/v1/usage", headers=bearer(other)).get_json()["days"] == [], "usage is per key"
    tenants().ledger.flush()
    assert client.get("/v1/usage", headers=bearer(key)).get_json()["days"][-1] == today, "written through, same"


def test_only_an_admin_reads_another_keys_usage(client):
    key, record = new_api_key("reader")
    admin, _ = new_api_key("admin", admin=True)
    refused = client.get(f"/v1/usage?key_id={record['id']}", headers=bearer(new_api_key("nosy")[0]))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    assert client.get(f"/v1/usage?key_id={record['id']}", headers=bearer(admin)).status_code == 200
    assert client.get("/v1/usage?key_id=0123abcd", headers=bearer(admin)).status_code == 404
    for malformed in ("nosuchkey", "%00", "x" * 17):  # never reaches SQL (a NUL there was a 503)
        assert client.get(f"/v1/usage?key_id={malformed}", headers=bearer(admin)).status_code == 400
    assert client.get("/v1/usage?days=0", headers=bearer(key)).status_code == 400
    assert client.get("/v1/usage").status_code == 401


def test_a_spent_budget_refuses_jobs_before_anything_queues(client):
    key, record = new_api_key("frugal", monthly_token_budget=100)
    tenants().meter.record_job(record["id"], "small", {"prompt_tokens": 60, "tokens": 30})
    job = queued(client, bearer(key))  # 90 of 100: still under
    cancel_all([job["id"]])
    tenants().meter.record_job(record["id"], "small", {"prompt_tokens": 5, "tokens": 5})
    jobs_before = len(list(job_store().redis.scan_iter("job:*")))
    refused = client.post("/v1/jobs", json={"prompt": "one more", "max_tokens": 2}, headers=bearer(key))
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "budget_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    chat = {"model": "auto", "messages": [{"role": "user", "content": "and chat?"}]}
    assert client.post("/v1/chat/completions", json=chat, headers=bearer(key)).status_code == 429
    assert len(list(job_store().redis.scan_iter("job:*"))) == jobs_before, "nothing was recorded or queued"
    month = client.get("/v1/usage", headers=bearer(key)).get_json()["month"]
    assert month == {"month": usage_month(), "tokens": 100, "budget": 100, "remaining": 0}


def test_an_exact_hit_is_stored_as_a_pointer_to_the_cache_entry(client):
    key, record = new_api_key("repeater")
    body = cache_answer(record["id"], "x" * 6000, response="The cached answer.")
    hit = client.post("/v1/jobs", json=body, headers=bearer(key)).get_json()
    assert hit["result"]["response"] == "The cached answer." and hit["result"]["cached"] == "exact"
    # SAMPLES 0: every field counted; the default samples 5 fields of a hash and scales up, so the figure
    # depended on which fields the Redis server's random hash seed put first.
    stored = job_store().redis.memory_usage(job_key(hit["id"]), samples=0)
    assert stored < 1500, f"an exact hit's record takes {stored} bytes; the prompt alone is 6000"
    polled = client.get(f"/v1/jobs/{hit['id']}", headers=bearer(key)).get_json()
    assert polled["result"] == hit["result"]
    exact_cache().index.remove([exact_cache().key({**JobRequestSchema().load(body), "key_id": record["id"]})])
    expired = client.get(f"/v1/jobs/{hit['id']}", headers=bearer(key)).get_json()
    assert expired["status"] == "succeeded" and expired["error"]["type"] == "Expired"


def test_a_flooding_key_sinks_its_own_priority_one_step_per_batch(client):
    flood_app = app_with(api_keys_required=True, rate_limit="1000/minute", engine_max_batch=2)
    flood = flood_app.test_client()
    key, _ = new_api_key("flooder")
    jobs = [queued(flood, bearer(key))["id"] for _ in range(5)]
    other = queued(flood, bearer(new_api_key("bystander")[0]))["id"]
    try:
        priorities = [job_store().get(job_id)["request"]["priority"] for job_id in jobs]
        assert priorities == [5, 5, 4, 4, 3]
        assert job_store().get(other)["request"]["priority"] == 5, "another key's first job keeps its priority"
    finally:
        cancel_all(jobs + [other])
    unfair = app_with(api_keys_required=True, rate_limit="1000/minute", engine_max_batch=2, fair_share=False)
    key, _ = new_api_key("flooder, fair share off")
    jobs = [queued(unfair.test_client(), bearer(key))["id"] for _ in range(3)]
    cancel_all(jobs)
    assert [job_store().get(job_id)["request"]["priority"] for job_id in jobs] == [5, 5, 5]


def test_revoking_a_key_refuses_it_and_cancels_its_jobs_on_the_record(client):
    key, record = new_api_key("leaked")
    jobs = [queued(client, bearer(key))["id"] for _ in range(2)]
    result = client.application.test_cli_runner().invoke(args=["keys", "revoke", record["id"]])
    assert result.exit_code == 0 and "cancelled 2" in result.output, result.output
    assert {job_store().get(job_id)["status"] for job_id in jobs} == {"cancelled"}
    assert client.get(f"/v1/jobs/{jobs[0]}", headers=bearer(key)).status_code == 401
    audit = client.application.test_cli_runner().invoke(args=["audit", "--limit", "20"])
    assert audit.exit_code == 0, audit.output
    audit = audit.output
    assert any("key_revoked" in line and record["id"] in line for line in audit.splitlines()), audit
    assert all(job_id in audit for job_id in jobs), audit


def test_a_tenants_cancel_is_audited_with_who_did_it(client):
    key, record = new_api_key("canceller")
    job = queued(client, bearer(key))
    assert client.delete(f"/v1/jobs/{job['id']}", headers=bearer(key)).status_code == 200
    tenants().ledger.flush()
    assert {"actor": record["id"], "action": "job_cancelled", "subject": job["id"]}.items() <= next(
        entry for entry in tenants().ledger.audit_entries(50) if entry["subject"] == job["id"]).items()


def test_keys_and_usage_survive_a_redis_restart(artifacts_dir):
    """Redis is stopped and started empty (nothing on disk): keys are read back from SQL, and the
    usage written through is all there."""
    from workerctl import redis_server

    port = free_port()
    server = redis_server(port, artifacts_dir / "logs")
    try:
        app = app_with(api_keys_required=True, redis_url=f"redis://127.0.0.1:{port}/0")
        own = app.extensions["llm_platform"].tenants
        key, record = own.keys.create(f"durable {uuid.uuid4().hex[:6]}")
        client = app.test_client()
        job = queued(client, bearer(key))
        assert client.delete(f"/v1/jobs/{job['id']}", headers=bearer(key)).status_code == 200
        before = client.get("/v1/usage", headers=bearer(key)).get_json()
        own.ledger.flush()
        server.send_signal(signal.SIGKILL)
        server.wait()
        server = redis_server(port, artifacts_dir / "logs")
        assert not own.keys.redis.exists(f"tenants:key:{digest(key)}"), "Redis came back empty"
        after = client.get("/v1/usage", headers=bearer(key))
        assert after.status_code == 200, "the key still works"
        assert after.get_json() == before and before["days"][-1]["requests"] == 1
    finally:
        server.kill()
        server.wait()


def test_an_unreachable_database_is_a_503_not_a_500():
    """A key not in Redis is read from SQL; with the database away that is a 503 in the JSON error shape."""
    gone = "postgresql+psycopg://postgres@127.0.0.1:1/gone"
    client = app_with(api_keys_required=True, database_url=gone).test_client()
    response = client.get("/v1/jobs", headers=bearer("llmq_" + "x" * 43))  # well formed, never cached
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "service_unavailable"


def test_a_malformed_key_is_refused_without_a_lookup(client, monkeypatch):
    """Tokens that are not shaped like a key never reach Redis or SQL (each would cost a read)."""
    tenants_of_app = client.application.extensions["llm_platform"].tenants
    looked_up = []
    monkeypatch.setattr(tenants_of_app.keys, "lookup", lambda key: looked_up.append(key))
    monkeypatch.setattr(type(tenants_of_app), "identify", lambda self, key: looked_up.append(key) or (None, None))
    for token in ("llmq_short", "x" * 48, "llmq_" + "!" * 43):
        response = client.get("/v1/jobs", headers=bearer(token))
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert looked_up == []
    client.get("/v1/jobs", headers=bearer("llmq_" + "y" * 43))
    assert looked_up == ["llmq_" + "y" * 43], "a well-formed token is looked up (the check can fail)"
