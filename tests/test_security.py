"""Nobody unwanted: API keys (hashed, CLI-managed, Bearer), per-key rate limits, request limits,
and no prompt or key in the logs at INFO."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import uuid

import pytest

from conftest import ROOT
from helpers import app_with, job_store, wait_for_job
from test_api_validation import assert_json_error
from workerctl import wait_until


@pytest.fixture()
def keyed_app():
    from helpers import app_with

    return app_with(api_keys_required=True, rate_limit="3/minute")


def create_key(app, *options: str) -> tuple[str, str]:
    """`flask keys create ...` through Flask's CLI runner; returns (key id, key)."""
    result = app.test_cli_runner().invoke(args=["keys", "create", *options])
    assert result.exit_code == 0, result.output
    return re.search(r"created key (\w+)", result.output).group(1), result.output.strip().splitlines()[-1]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def submit_and_cancel(client, headers: dict) -> int:
    """POST a tiny job; cancel it at once if it was accepted (no worker time spent). Returns the status."""
    response = client.post("/v1/jobs", json={"prompt": "hello", "max_tokens": 1}, headers=headers)
    if response.status_code == 202:
        client.delete(f"/v1/jobs/{response.get_json()['id']}", headers=headers)
    return response.status_code


def assert_kept_hashed(key: str) -> None:
    """The key is in SQL and in Redis only as its SHA-256, never as itself."""
    from sqlalchemy import select

    from helpers import tenants
    from tenants.schema import api_keys

    digest = hashlib.sha256(key.encode()).hexdigest()
    with tenants().keys.engine.connect() as connection:
        rows = [tuple(str(value) for value in row) for row in connection.execute(select(api_keys))]
    assert any(digest in row for row in rows) and not any(key in value for row in rows for value in row)
    redis = job_store().redis
    assert not any(key.encode() in name + (redis.get(name) or b"") for name in redis.scan_iter("tenants:key:*"))


def test_keys_are_stored_hashed_and_managed_by_the_cli(keyed_app):
    runner = keyed_app.test_cli_runner()
    key_id, key = create_key(keyed_app, "--name", "ci-bot")
    assert_kept_hashed(key)

    listing = runner.invoke(args=["keys", "list"]).output
    assert key_id in listing and "ci-bot" in listing and key not in listing
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code == 0
    assert key_id not in runner.invoke(args=["keys", "list"]).output
    assert runner.invoke(args=["keys", "revoke", key_id]).exit_code == 0, "repeating a revocation redoes it"
    assert runner.invoke(args=["keys", "revoke", "nosuchid"]).exit_code != 0
    assert runner.invoke(args=["keys", "create", "--name", "x", "--rate-limit", "lots"]).exit_code != 0


def test_flask_keys_command_runs_with_flask_app_wsgi():
    env = {**os.environ, "FLASK_APP": "wsgi"}
    flask = os.path.join(sys.prefix, "bin", "flask")
    created = subprocess.run([flask, "keys", "create", "--name", "shell"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"created key (\w+)", created.stdout).group(1)
    revoked = subprocess.run([flask, "keys", "revoke", key_id], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
    assert revoked.returncode == 0, revoked.stderr


def test_missing_wrong_or_revoked_key_gets_401(keyed_app):
    client = keyed_app.test_client()
    key_id, key = create_key(keyed_app, "--name", "caller")
    for headers in ({}, bearer("llmq_not-a-key"), {"Authorization": f"Basic {key}"}, {"Authorization": "Bearer "}):
        response = client.post("/v1/jobs", json={"prompt": "hi"}, headers=headers)
        assert_json_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_json_error(client.get("/v1/jobs/" + "0" * 32), 401, "unauthorized")
    assert_json_error(client.delete("/v1/jobs/" + "0" * 32), 401, "unauthorized")

    assert submit_and_cancel(client, bearer(key)) == 202
    assert client.get("/v1/jobs/" + "0" * 32, headers=bearer(key)).status_code == 404
    keyed_app.test_cli_runner().invoke(args=["keys", "revoke", key_id])
    assert_json_error(client.post("/v1/jobs", json={"prompt": "hi"}, headers=bearer(key)), 401, "unauthorized")
    # Liveness and the API description stay public.
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/health").status_code != 401


def test_rate_limit_is_per_key(keyed_app):
    client = keyed_app.test_client()
    _, busy = create_key(keyed_app, "--name", "busy")  # RATE_LIMIT: 3/minute
    _, own_limit = create_key(keyed_app, "--name", "slow", "--rate-limit", "1/minute")

    assert [submit_and_cancel(client, bearer(busy)) for _ in range(3)] == [202] * 3
    limited = client.post("/v1/jobs", json={"prompt": "hi"}, headers=bearer(busy))
    assert_json_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) > 0
    # /generate shares the budget.
    assert_json_error(client.post("/generate", json={"prompt": "hi"}, headers=bearer(busy)), 429, "rate_limited")
    # Another key has its own budget, here its own limit.
    assert submit_and_cancel(client, bearer(own_limit)) == 202
    assert submit_and_cancel(client, bearer(own_limit)) == 429
    # Reading and cancelling jobs is not limited.
    assert client.get("/v1/jobs/" + "0" * 32, headers=bearer(busy)).status_code == 404


def test_prompt_over_the_token_limit_is_400():
    client = app_with(prompt_max_tokens=5).test_client()
    error = assert_json_error(client.post("/v1/jobs", json={"prompt": "one two three four five six seven"}),
                              400, "invalid_request")
    assert "tokens" in error["fields"]["prompt"][0]


def test_max_tokens_over_the_configured_limit_is_400():
    client = app_with(max_tokens_limit=16).test_client()
    error = assert_json_error(client.post("/v1/jobs", json={"prompt": "hi", "max_tokens": 17}), 400,
                              "invalid_request")
    assert "max_tokens" in error["fields"]


def test_prompt_that_is_not_valid_unicode_is_400(client):
    body = '{"prompt": "hi \\ud800 there"}'  # valid JSON, but a lone surrogate is no text
    assert_json_error(client.post("/v1/jobs", data=body, content_type="application/json"), 400, "invalid_request")


@pytest.mark.usefixtures("workers")
def test_no_prompt_or_key_in_logs_at_info(keyed_app, client, caplog, artifacts_dir):
    marker = f"zebra-{uuid.uuid4().hex[:10]}"
    prompt = f"Please repeat this word: {marker}"
    caplog.set_level(logging.INFO)
    _, key = create_key(keyed_app, "--name", "logs")
    keyed = keyed_app.test_client()
    keyed.post("/v1/jobs", json={"prompt": prompt}, headers=bearer(key + "x"))  # a wrong key
    assert submit_and_cancel(keyed, bearer(key)) == 202
    view = wait_for_job(client, client.post("/v1/jobs", json={"prompt": prompt, "tier": "small",
                                                              "max_tokens": 4}).get_json()["id"])
    assert view["status"] == "succeeded"

    def read_worker_logs() -> str:
        return "".join(p.read_text(errors="replace") for p in (artifacts_dir / "logs").glob("*.log"))

    # Celery logs the success just after the job record says so.
    worker_logs = wait_until(lambda: (logs := read_worker_logs()) and
                             f"tasks.small.generate[{view['id']}] succeeded" in logs and logs, 60,
                             "the success log line")
    for text, where in ((caplog.text, "web app log"), (worker_logs, "worker logs")):
        assert marker not in text, f"prompt text in the {where}"
        assert key not in text, f"API key in the {where}"
        assert "'response':" not in text, f"generated text in the {where}"
