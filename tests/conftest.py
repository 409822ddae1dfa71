"""Test session set-up: a Redis DB of our own and real Celery workers for the three queues."""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import free_port, free_udp_port

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
# Keys, usage and audit go to the machine's PostgreSQL, in a schema of this session's own (runs side by side).
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_SCHEMA = f"llmq_test_{os.getpid()}"

# Set before any project module reads its configuration.
os.environ["REDIS_URL"] = TEST_REDIS_URL
os.environ["DATABASE_URL"] = f"{TEST_DATABASE_URL}?options=-csearch_path%3D{TEST_SCHEMA}"
os.environ["HOST"] = "127.0.0.1"  # the tests serve on loopback, whatever the shell's HOST says
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# StatsD metrics of the app and the workers go to a UDP port of this session (tests/test_metrics.py listens).
os.environ.update(STATSD_HOST="127.0.0.1", STATSD_PORT=str(free_udp_port()), STATSD_PREFIX="test",
                  QUEUE_DEPTH_INTERVAL_S="2")

WORKERS = {
    "routing": ["-Q", "routing", "--concurrency", "2"],
    "small": ["-Q", "small-queue", "--concurrency", "4"],
    "large": ["-Q", "large-queue", "--concurrency", "4"],
}
# Each session worker serves Prometheus on a port of its own (METRICS_PORT), the same one when a test restarts it.
METRICS_PORTS: dict[str, int] = {}


# Modules whose tests load the generation model in the test process (no worker fixture to tell).
MODEL_MODULES = {"test_engine", "test_engine_llamacpp", "test_gguf", "test_no_mlx", "test_outage", "test_delivery",
                 "test_loadtest", "test_playground"}


def pytest_collection_modifyitems(items) -> None:
    """The integration layer is marked `slow`: tests that need a worker, the web server or the model."""
    for item in items:
        needs_workers = {"workers", "live_server"} & set(getattr(item, "fixturenames", ()))
        if needs_workers or item.module.__name__ in MODEL_MODULES:
            item.add_marker(pytest.mark.slow)


def _flush_test_db() -> None:
    import redis

    redis.Redis.from_url(TEST_REDIS_URL).flushdb()


def start_worker(name: str, log_dir: Path, extra_env: dict | None = None,
                 args: list[str] | None = None) -> subprocess.Popen:
    """A real `celery worker` process consuming one queue, logging to log_dir/<name>.log.

    `args` replace WORKERS[name] (queue and concurrency) for workers a test starts on its own.
    """
    ports = {"METRICS_PORT": str(METRICS_PORTS.setdefault(name, free_port()))} if name in WORKERS else {}
    env = {**os.environ, "ENGINE_MAX_BATCH": "4", **ports, **(extra_env or {})}
    log = open(log_dir / f"{name}.log", "ab")
    cmd = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-n", f"{name}-test@%h",
           "--pool", "threads", "--loglevel", "INFO", "--without-mingle", "--without-gossip", *(args or WORKERS[name])]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    from bench.stack import stop_process as stop_group

    stop_group(proc, timeout)


def wait_for_queues(queues: list[str], timeout: float = 120) -> None:
    from helpers import broker

    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = broker().workers_per_queue(timeout_s=1.0)
        if all(counts.get(q) for q in queues):
            return
    raise RuntimeError(f"workers for {queues} did not come up; see test-artifacts/logs")


@pytest.fixture(scope="session", autouse=True)
def clean_test_db() -> None:
    """Each session starts on an empty Redis DB of its own: jobs an earlier run left queued (no worker
    runs in the fast layer) must not fill the queues and turn this run's submissions into 429s."""
    _flush_test_db()


@pytest.fixture(scope="session", autouse=True)
def test_database():
    """This session's schema in the test PostgreSQL, at the newest migration; dropped at the end."""
    from sqlalchemy import create_engine, text

    from tenants.database import upgrade

    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {TEST_SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {TEST_SCHEMA}"))
    upgrade(os.environ["DATABASE_URL"])
    yield os.environ["DATABASE_URL"]
    from tenants.database import database_engine

    database_engine(os.environ["DATABASE_URL"]).dispose()
    with admin.connect() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {TEST_SCHEMA} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = ROOT / "test-artifacts"
    # Logs start empty each session: tests read them (log hygiene) and must see only this run.
    shutil.rmtree(path / "logs", ignore_errors=True)
    (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def workers(artifacts_dir):
    """Routing, small and large workers, started once for the session."""
    _flush_test_db()
    procs = {name: start_worker(name, artifacts_dir / "logs") for name in WORKERS}
    try:
        wait_for_queues(["routing", "small-queue", "large-queue"])
        yield procs
    finally:
        for proc in procs.values():
            stop_process(proc)


@pytest.fixture(scope="session")
def worker_metrics_urls(workers) -> dict[str, str]:
    """Each session worker's Prometheus endpoint: name (routing, small, large) -> URL."""
    return {name: f"http://127.0.0.1:{METRICS_PORTS[name]}/metrics" for name in WORKERS}


def serve_web(log_path: Path, **env_changes: str):
    """The web app under gunicorn (gevent, as deployed) on a free port: (process, base URL), once it answers."""
    import requests

    from helpers import free_port, web_command

    port = free_port()
    # A first job on a busy machine waits for cold models; usage is written through as deployed.
    env = {**os.environ, "WAIT_TIMEOUT_S": "180", "USAGE_FLUSH_S": "1", **env_changes}
    proc = subprocess.Popen(web_command(port), cwd=ROOT, env=env, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if requests.get(f"{url}/openapi.json", timeout=10).ok:
                return proc, url
        except requests.RequestException:  # not listening yet, or still importing
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_process(proc)
            raise RuntimeError(f"gunicorn did not come up; see {log_path}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def live_server(workers, artifacts_dir):
    """The web app under gunicorn on a free port, API keys off; yields its base URL."""
    proc, url = serve_web(artifacts_dir / "logs" / "web.log")
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def keyed_live_server(workers, artifacts_dir):
    """The web app under gunicorn with API keys required (`API_KEYS_REQUIRED=1`); yields its base URL."""
    proc, url = serve_web(artifacts_dir / "logs" / "web-keyed.log", API_KEYS_REQUIRED="1")
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(autouse=True)
def _collector_unfrozen():
    """Every test starts and ends with nothing frozen out of the garbage collector: a test that runs a
    serving process's start-up (webapp.start_serving, a worker's warm-up) freezes the whole test
    process's heap (heap.py), and what later tests drop from it would never be collected."""
    gc.unfreeze()
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def app():
    from helpers import app_with

    return app_with(wait_timeout_s=120)


@pytest.fixture()
def client(app):
    return app.test_client()
