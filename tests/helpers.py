"""Helpers shared by the tests."""
from __future__ import annotations

import functools
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def job_store():
    """A job store on the test Redis, as a worker would build it."""
    from jobs import settings_client
    from jobs.store import JobStore

    settings = get_settings()
    client = settings_client(settings, settings.worker_redis_timeout_s)
    return JobStore(client, settings.job_ttl_s)


@functools.lru_cache(maxsize=None)
def exact_cache():
    """The exact cache as the web app builds it (same keys, same index)."""
    from cache.exact import ExactCache
    from engines.provider import served_models

    settings = get_settings()
    return ExactCache(job_store().redis, served_models(), settings.exact_cache_ttl_s,
                      settings.exact_cache_max_entries)


@functools.lru_cache(maxsize=None)
def semantic_cache():
    """The semantic cache as the routing worker builds it."""
    from cache.semantic import SemanticCache
    from engines.provider import served_models

    settings = get_settings()
    return SemanticCache(job_store(), served_models(), settings.semantic_cache_threshold,
                         settings.semantic_cache_ttl_s, settings.semantic_cache_max_entries)


def app_with(**changes):
    """A test app whose settings differ from this process's by `changes` (e.g. `prompt_max_chars=50`)."""
    from webapp import create_app

    return create_app(get_settings().replace(**changes), {"TESTING": True})


def new_api_key(name: str, **options) -> tuple[str, dict]:
    """A new API key (and its record) in the store the test apps use; `options` as `flask keys create` takes them."""
    return tenants().keys.create(name, **options)


@functools.lru_cache(maxsize=None)
def tenants():
    """Keys, usage meter and ledger on the test database and Redis, as the web app builds them."""
    from tenants.service import Tenants

    return Tenants.build(get_settings(), job_store().redis)


@functools.lru_cache(maxsize=None)
def broker():
    """The web app's broker: Celery's client side, as the web app uses it."""
    from webapp.broker import Broker

    return Broker(get_settings())


def task_returned(job_id: str, timeout: float = 180) -> None:
    """Wait until a worker of the session has logged the return of the Celery task `job_id` (job tasks
    store no Celery result: the job record is the result)."""
    from workerctl import wait_until

    logs, needle = ROOT / "test-artifacts" / "logs", f"[{job_id}] succeeded"
    wait_until(lambda: any(needle in path.read_text(errors="replace") for path in logs.glob("*.log")), timeout,
               f"task {job_id} to return")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_command(port: int, graceful_timeout_s: int = 10) -> list[str]:
    """gunicorn serving the web app as deployed (the gevent worker, its config, Prometheus's multiprocess
    mode in a new temporary directory of this server's own), one worker, on 127.0.0.1:`port`."""
    # A new folder per server, under test-artifacts (gitignored, emptied with each session's logs), not /tmp.
    parent = Path(__file__).resolve().parent.parent / "test-artifacts" / "logs" / "prometheus"
    parent.mkdir(parents=True, exist_ok=True)
    multiprocess_dir = tempfile.mkdtemp(prefix=f"{port}-", dir=parent)
    return [sys.executable, "-m", "gunicorn", "-c", "python:gunicorn_conf",
            "--env", f"PROMETHEUS_MULTIPROC_DIR={multiprocess_dir}", "--worker-class", "gevent",
            "--worker-connections", "2000", "--workers", "1", "--graceful-timeout", str(graceful_timeout_s),
            "--no-control-socket", "--bind", f"127.0.0.1:{port}", "wsgi:app"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_cached(body: dict, timeout: float = 30) -> dict:
    """The exact cache stores an answer just after the job's result is published; wait for it."""
    from webapp.schemas import JobRequestSchema

    key = exact_cache().key(JobRequestSchema().load(body))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (entry := exact_cache().index.get(key)) is not None:
            return entry
        time.sleep(0.1)
    raise AssertionError(f"no exact cache entry for {body}")


def wait_for_job(client, job_id: str, timeout: float = 180) -> dict:
    """Poll the job API until the job ends; return the last view."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").get_json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {view}")


def iter_sse(chunks) -> Iterator[dict]:
    """Parse Server-Sent Events from an iterable of bytes/str chunks, as they arrive.

    Yields {"event", "data", "id"} per event (data JSON-decoded when it is JSON) and
    {"comment": text} per comment line.
    """
    import json

    buffer = ""
    for chunk in chunks:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            event = {"event": "message", "data": None, "id": None}
            data_lines = []
            for line in block.splitlines():
                if line.startswith(":"):
                    yield {"comment": line[1:].strip()}
                    continue
                field, _, value = line.partition(": ")
                if field == "data":
                    data_lines.append(value)
                elif field in ("event", "id"):
                    event[field] = value
            if data_lines:
                data = "\n".join(data_lines)
                try:
                    event["data"] = json.loads(data)
                except ValueError:
                    event["data"] = data
                yield event
