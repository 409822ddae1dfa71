"""Redis outages: every endpoint answers a 503 JSON error at once (never a hang or a 500), and the
stack recovers by itself when Redis returns.

The test runs a stack of its own, as `make run` would: a redis-server on a free port, the web app
under gunicorn and a routing and a small worker pointed at it. Redis is killed once and frozen
(SIGSTOP: connections open, no answers) once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import redis
import requests

from conftest import ROOT, start_worker
from helpers import free_port, web_command
from workerctl import redis_server, stop_warm, wait_until

JOB_ID = "0" * 32
# (method, path, body): every endpoint; /openapi.json needs no Redis and keeps answering 200.
ENDPOINTS = [
    ("post", "/v1/jobs", {"prompt": "hi", "max_tokens": 2}),
    ("post", "/generate", {"prompt": "hi", "max_tokens": 2}),
    ("get", f"/v1/jobs/{JOB_ID}", None),
    ("delete", f"/v1/jobs/{JOB_ID}", None),
    ("get", "/ready", None),
]
# Not a speed threshold: only a hang detector. The answer times are printed.
HANG_S = 10


@pytest.fixture()
def private_stack(artifacts_dir):
    """(base url, redis port, redis process holder) of a stack on a Redis of its own."""
    log_dir = artifacts_dir / "logs"
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    holder = {"redis": redis_server(port, log_dir)}
    web_port = free_port()
    web = subprocess.Popen(
        web_command(web_port),
        cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url, "WAIT_TIMEOUT_S": "300"},
        stdout=open(log_dir / "outage-web.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{web_port}"
    workers = []
    try:
        wait_until(lambda: _answers(base + "/openapi.json"), 120, "the web app")
        for name, queue in (("outage-routing", "routing"), ("outage-small", "small-queue")):
            workers.append(start_worker(name, log_dir, {"REDIS_URL": redis_url}, ["-Q", queue, "--concurrency", "2"]))
        wait_until(lambda: _workers_up(base), 300, "the stack's workers")
        yield base, port, holder
    finally:
        for proc in workers:
            stop_warm(proc, timeout=60)
        web.terminate()
        web.wait(30)
        holder["redis"].send_signal(signal.SIGCONT)
        holder["redis"].kill()
        holder["redis"].wait()


def _workers_up(base: str) -> bool:
    workers = requests.get(base + "/ready", timeout=HANG_S).json()["workers"]
    return workers.get("routing", 0) > 0 and workers.get("small-queue", 0) > 0


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _call(base: str, method: str, path: str, body) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = getattr(requests, method)(base + path, json=body, timeout=HANG_S)
    return response, time.monotonic() - started


def _assert_all_unavailable(base: str, what: str) -> None:
    times = {}
    for method, path, body in ENDPOINTS:
        response, elapsed = _call(base, method, path, body)
        times[f"{method.upper()} {path}"] = elapsed
        assert response.status_code == 503, (method, path, response.text)
        error = response.json()["error"]
        assert error["code"] == "service_unavailable" and error["message"]
    assert requests.get(base + "/openapi.json", timeout=HANG_S).status_code == 200
    assert requests.get(base + "/health", timeout=HANG_S).json() == {"status": "ok"}  # alive all the same
    print(f"\nRedis {what}: every endpoint answered 503; slowest {max(times.values()):.2f}s "
          f"({', '.join(f'{k} {v:.2f}s' for k, v in times.items())})")


def _run_a_job(base: str, port: int) -> dict:
    """A job through the whole stack, once Redis answers again (retried until the web app accepts it).

    Returns once the worker has also acknowledged the job's message. A job's record says
    `succeeded` a moment before the worker acks: kombu crashes the worker (an AttributeError while
    restoring unacked messages) when Redis dies in that moment. Under supervisord the worker comes
    back; this stack has no supervisor, and this test is about the stack, not that kombu bug.
    """
    submitted = wait_until(lambda: _accepted(base), 120, "the web app to accept jobs again")
    job_id = submitted["id"]
    view = wait_until(lambda: (view := requests.get(f"{base}/v1/jobs/{job_id}", timeout=HANG_S).json())
                      ["status"] in ("succeeded", "failed", "cancelled") and view, 600, "the job to finish")
    broker = redis.Redis(port=port, socket_timeout=HANG_S)
    wait_until(lambda: broker.hlen("unacked") == 0, 60, "the worker to acknowledge the job")
    return view


def _accepted(base: str):
    response = requests.post(base + "/v1/jobs", json={"prompt": "Say hello.", "tier": "small", "max_tokens": 2, "cache": False},
                             timeout=HANG_S)
    return response.json() if response.status_code == 202 else None


def test_redis_outage_gives_fast_503s_and_the_stack_recovers(private_stack, artifacts_dir):
    base, port, holder = private_stack
    assert _run_a_job(base, port)["status"] == "succeeded"

    holder["redis"].kill()  # Redis dies: connections are refused
    holder["redis"].wait()
    _assert_all_unavailable(base, "killed")
    holder["redis"] = redis_server(port, artifacts_dir / "logs")  # back, empty, same port
    assert _run_a_job(base, port)["status"] == "succeeded", "the stack did not recover by itself"

    holder["redis"].send_signal(signal.SIGSTOP)  # Redis hangs: connections open, no answers
    try:
        _assert_all_unavailable(base, "frozen")
    finally:
        holder["redis"].send_signal(signal.SIGCONT)
    assert _run_a_job(base, port)["status"] == "succeeded", "the stack did not recover by itself"
