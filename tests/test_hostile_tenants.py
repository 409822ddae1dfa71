"""The hostile-tenant suite, against the served stack (gunicorn with API keys on, real workers, the
session's PostgreSQL): every route tried across keys, a flood from one key while another's job is
timed by its place in line, a budget spent mid-stream, a key revoked mid-job, and the tenants'
Redis state lost with keys still working. The cross-tenant matrix is written to
test-artifacts/tenant-matrix.md."""
from __future__ import annotations


import pytest
import requests

from conftest import serve_web, stop_process
from helpers import app_with, iter_sse, job_store, new_api_key
from workerctl import wait_until

SLOTS = 4  # each test worker's concurrency and ENGINE_MAX_BATCH (tests/conftest.py)
TIMEOUT = 300


@pytest.fixture(scope="module")
def served(workers, artifacts_dir):
    """A keyed server whose fair-share step matches the workers' slots."""
    proc, url = serve_web(artifacts_dir / "logs" / "web-hostile.log", API_KEYS_REQUIRED="1",
                          ENGINE_MAX_BATCH=str(SLOTS), RATE_LIMIT="1000/minute", READ_RATE_LIMIT="5000/minute")
    try:
        yield url
    finally:
        stop_process(proc)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def keys(*names: str, **options) -> dict[str, tuple[str, dict]]:
    return {name: new_api_key(f"hostile {name}", admin=name == "admin", **options) for name in names}


def finished(url: str, headers: dict, job_id: str) -> dict:
    view = {}

    def done() -> bool:
        nonlocal view
        view = requests.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        return view["status"] in ("succeeded", "failed", "cancelled")

    wait_until(done, TIMEOUT, f"job {job_id}")
    return view


def submit(url: str, headers: dict, prompt: str, max_tokens: int = 8, **fields) -> str:
    body = {"prompt": prompt, "max_tokens": max_tokens, "cache": False, "tier": "small", **fields}
    response = requests.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["id"]


MATRIX_ROUTES = [
    ("GET", "/v1/jobs/{id}"), ("GET", "/v1/jobs/{id}/stream"), ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs (listed?)"), ("GET", "/v1/usage?key_id={owner}"),
]
# What each caller must get for a job of tenant A (finished, so a cancel is a 409 conflict): its owner
# and an admin reach it, B and no key never.
REACHED = {"GET /v1/jobs/{id}": 200, "GET /v1/jobs/{id}/stream": 200, "DELETE /v1/jobs/{id}": 409,
           "GET /v1/jobs (listed?)": "listed", "GET /v1/usage?key_id={owner}": 200}
REFUSED = {"GET /v1/jobs/{id}": 404, "GET /v1/jobs/{id}/stream": 404, "DELETE /v1/jobs/{id}": 404,
           "GET /v1/jobs (listed?)": "not listed", "GET /v1/usage?key_id={owner}": 403}


def expected(caller: str, method: str, route: str):
    return 401 if caller == "none" else (REFUSED if caller == "b" else REACHED)[f"{method} {route}"]


def _try(url: str, method: str, route: str, job_id: str, owner: str, headers: dict):
    if route.startswith("/v1/jobs (listed"):
        response = requests.get(f"{url}/v1/jobs?limit=100", headers=headers, timeout=30)
        if response.status_code != 200:
            return response.status_code
        return "listed" if job_id in [job["id"] for job in response.json()["jobs"]] else "not listed"
    path = route.format(id=job_id, owner=owner)
    return requests.request(method, f"{url}{path}", headers=headers, timeout=60).status_code


def test_no_route_lets_one_key_reach_another_keys_job(served, artifacts_dir):
    tenants = keys("a", "b", "admin")
    owner = tenants["a"][1]["id"]
    plain = submit(served, bearer(tenants["a"][0]), "Name a colour.")
    chat = requests.post(f"{served}/v1/chat/completions", headers=bearer(tenants["a"][0]), timeout=TIMEOUT, json={
        "model": "small", "max_tokens": 8, "messages": [{"role": "user", "content": "Name a fruit."}]})
    assert chat.status_code == 200, chat.text
    chat_job = chat.headers["X-Job-Id"] if "X-Job-Id" in chat.headers else chat.json()["id"].removeprefix("chatcmpl-")
    finished(served, bearer(tenants["a"][0]), plain)
    callers = {"none": {}, **{name: bearer(tenants[name][0]) for name in ("b", "a", "admin")}}
    rows = ["| route | job | no key | key B | key A (owner) | admin key |", "|---|---|---|---|---|---|"]
    for job_name, job_id in (("/v1/jobs", plain), ("chat", chat_job)):
        for method, route in MATRIX_ROUTES:
            got = {caller: _try(served, method, route, job_id, owner, headers) for caller, headers in callers.items()}
            rows.append(f"| {method} {route} | {job_name} | " + " | ".join(str(got[c]) for c in callers) + " |")
            for caller, result in got.items():
                assert result == expected(caller, method, route), (method, route, job_name, caller, result)
    (artifacts_dir / "tenant-matrix.md").write_text("\n".join(rows) + "\n")
    assert finished(served, bearer(tenants["a"][0]), plain)["status"] == "succeeded", "B's tries changed A's job"


def test_a_flood_from_one_key_leaves_at_most_one_batch_ahead_of_another_keys_job(served):
    tenants = keys("flood", "quiet")
    flood = [submit(served, bearer(tenants["flood"][0]), f"Count slowly from {n} to {n + 40}.", max_tokens=24)
             for n in range(3 * SLOTS)]
    wait_until(lambda: job_store().get(flood[0])["status"] == "generating", TIMEOUT, "the flood to start")
    quiet = submit(served, bearer(tenants["quiet"][0]), "Say hello.")
    finished(served, bearer(tenants["quiet"][0]), quiet)
    record = job_store().get(quiet)
    started = {job_id: job_store().get(job_id).get("generation_started_at") for job_id in flood}
    window = (record["created_at"], record["generation_started_at"])
    ahead = [job_id for job_id, at in started.items() if at and window[0] < at < window[1]]
    print(f"flood jobs that started between the quiet job's submission and its start: {len(ahead)} "
          f"(bound: {SLOTS}, one per slot)")
    assert len(ahead) <= SLOTS
    for job_id in flood:
        requests.delete(f"{served}/v1/jobs/{job_id}", headers=bearer(tenants["flood"][0]), timeout=30)


def counted_usage(base: str, key: str, completion_tokens: int) -> dict:
    """`GET /v1/usage` once the worker has counted `completion_tokens` for today: it counts a job's tokens
    just after it marks the job finished, so a read right as the job ends can be a moment early."""
    def read() -> dict:
        return requests.get(f"{base}/v1/usage", headers=bearer(key), timeout=30).json()

    return wait_until(lambda: (lambda usage: usage if usage["days"] and usage["days"][-1]["completion_tokens"]
                                >= completion_tokens else None)(read()), 30, "the jobs' tokens to be counted")


def test_usage_matches_the_tokens_generated(served):
    key, record = new_api_key("metered")
    job_ids = [submit(served, bearer(key), f"Write {n} words about rivers.", max_tokens=6 + n) for n in range(3)]
    views = [finished(served, bearer(key), job_id) for job_id in job_ids]
    assert all(view["status"] == "succeeded" for view in views)
    generated = sum(view["result"]["tokens"] for view in views)
    today = counted_usage(served, key, generated)["days"][-1]
    assert today["completion_tokens"] == generated
    assert today["prompt_tokens"] == sum(view["result"]["prompt_tokens"] for view in views) > 0
    assert (today["requests"], today["jobs_small"], today["jobs_large"]) == (3, 3, 0)


def test_usage_matches_the_tokens_generated_on_sqlite_too(workers, artifacts_dir, tmp_path):
    """A deployment of its own on SQLite: its own Redis (a shared one would let the session's web
    servers write its usage through to their PostgreSQL), web app, routing and small worker."""
    import redis

    from conftest import start_worker
    from helpers import free_port
    from jobs.presence import live_counts
    from settings import get_settings
    from tenants.database import upgrade
    from tenants.service import Tenants
    from workerctl import redis_server, stop_warm

    database, port = f"sqlite:///{tmp_path / 'platform.db'}", free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    upgrade(database)
    server = redis_server(port, artifacts_dir / "logs")
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database}
    procs = [start_worker(f"sqlite-{queue}", artifacts_dir / "logs", env, ["-Q", queue, "--concurrency", "2"])
             for queue in ("small-queue", "routing")]
    web, base = serve_web(artifacts_dir / "logs" / "web-sqlite.log", API_KEYS_REQUIRED="1", **env)
    try:
        client = redis.Redis.from_url(redis_url)
        wait_until(lambda: live_counts(client, ["routing", "small-queue"], 2.0) == {"routing": 1, "small-queue": 1},
                   TIMEOUT, "the SQLite deployment's workers")
        settings = get_settings().replace(database_url=database, redis_url=redis_url)
        key, _ = Tenants.build(settings, client).keys.create("on sqlite")
        job_id = submit(base, bearer(key), "Name three rivers.", max_tokens=10)
        view = finished(base, bearer(key), job_id)
        today = counted_usage(base, key, view["result"]["tokens"])["days"][-1]
        assert (today["completion_tokens"], today["prompt_tokens"]) == (view["result"]["tokens"],
                                                                        view["result"]["prompt_tokens"])
        wait_until(lambda: not client.exists("usage:pending", "usage:batches"), 30, "usage written to SQLite")
        assert requests.get(f"{base}/v1/usage", headers=bearer(key), timeout=30).json()["days"][-1] == today
    finally:
        stop_process(web)
        for proc in procs:
            stop_warm(proc, timeout=60)
        server.kill()
        server.wait()


def test_a_budget_spent_mid_stream_finishes_the_stream_then_refuses_the_key(served):
    key, _ = new_api_key("thrifty", monthly_token_budget=30)
    body = {"model": "small", "max_tokens": 40, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]}
    with requests.post(f"{served}/v1/chat/completions", json=body, headers=bearer(key), stream=True,
                       timeout=TIMEOUT) as response:
        assert response.status_code == 200
        events = [event for event in iter_sse(response.iter_content(chunk_size=None)) if "comment" not in event]
    usage = next(event["data"]["usage"] for event in events if isinstance(event["data"], dict)
                 and event["data"].get("usage"))
    assert usage["total_tokens"] > 30, "the admitted job ran to its end"
    counted_usage(served, key, usage["completion_tokens"])
    refused = requests.post(f"{served}/v1/chat/completions", headers=bearer(key), timeout=30,
                            json={"model": "small", "messages": [{"role": "user", "content": "More?"}]})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    month = requests.get(f"{served}/v1/usage", headers=bearer(key), timeout=30).json()["month"]
    assert month["tokens"] == usage["total_tokens"] and month["remaining"] == 0


def test_a_key_revoked_mid_job_stops_its_stream_and_its_next_call(served):
    key, record = new_api_key("to be revoked")
    job_id = submit(served, bearer(key), "Write a very long essay about the sea.", max_tokens=400)
    with requests.get(f"{served}/v1/jobs/{job_id}/stream", headers=bearer(key), stream=True,
                      timeout=TIMEOUT) as response:
        events = iter_sse(response.iter_content(chunk_size=None))
        next(event for event in events if event.get("event") == "token")
        revoked = app_with().test_cli_runner().invoke(args=["keys", "revoke", record["id"]])
        assert revoked.exit_code == 0 and "cancelled 1" in revoked.output, revoked.output
        last = [event for event in events if "comment" not in event][-1]
    assert last["event"] == "final" and last["data"]["status"] == "cancelled"
    assert requests.get(f"{served}/v1/jobs/{job_id}", headers=bearer(key), timeout=30).status_code == 401


def test_keys_and_usage_hold_when_the_tenants_redis_state_is_lost(served):
    key, _ = new_api_key("forgetful redis")
    job_id = submit(served, bearer(key), "Say yes.", max_tokens=4)
    finished(served, bearer(key), job_id)
    before = requests.get(f"{served}/v1/usage", headers=bearer(key), timeout=30).json()
    wait_until(lambda: not job_store().redis.exists("usage:pending", "usage:batches"), 30, "usage written through")
    client = job_store().redis
    for pattern in ("tenants:key:*", "usage:*", "audit:*"):
        for name in client.scan_iter(pattern):
            client.delete(name)
    after = requests.get(f"{served}/v1/usage", headers=bearer(key), timeout=30)
    assert after.status_code == 200 and after.json() == before
