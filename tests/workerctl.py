"""Test helpers that steer real workers and read what they left in Redis (used by the delivery,
control, outage and security tests)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

from conftest import ROOT, start_worker, stop_process
from helpers import broker, job_store
from jobs.presence import live_workers
from settings import get_settings

HOST = socket.gethostname()

# For workers a test kills: Redis hands their unacknowledged jobs to another worker after 70 s
# (the session's workers keep the default); the time limits must stay below that, with room for a
# loaded 2-core machine (six 200-token jobs on the small tier take about 15 s together). The test
# waits out this timeout, so it is the integration layer's longest wait. Any worker sweeps every worker's unacknowledged messages, so start such
# workers only while nothing else is in flight (wait_until_nothing_in_flight).
SHORT_REDELIVERY_ENV = {
    "VISIBILITY_TIMEOUT_S": "70",
    "UNACKED_RESTORE_INTERVAL_S": "1",
    "ROUTING_TIME_LIMIT_S": "60",
    "SMALL_TIME_LIMIT_S": "60",
    "LARGE_TIME_LIMIT_S": "60",
}


def node(name: str) -> str:
    """The Celery node name conftest.start_worker gives a worker called `name`."""
    return f"{name}-test@{HOST}"


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_until_steady(condition: Callable[[], object], hold_s: float, timeout: float, what: str) -> None:
    """Poll until `condition` has held for `hold_s` without a break.

    Worker presence needs this: a heartbeat that read a worker's queues just before a
    `cancel_consumer` can land just after it and list the worker once more.
    """
    deadline = time.time() + timeout
    held_since = None
    while time.time() < deadline:
        if not condition():
            held_since = None
        elif held_since is None:
            held_since = time.time()
        elif time.time() - held_since >= hold_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} to hold for {hold_s:g}s")


def wait_ready(name: str, timeout: float = 180) -> None:
    """Wait until the worker `name` answers a ping."""
    app = broker().celery
    wait_until(lambda: app.control.ping(destination=[node(name)], timeout=1.0), timeout, f"worker {name}")


@contextlib.contextmanager
def paused(name: str, queue: str) -> Iterator[None]:
    """Stop worker `name` taking messages from `queue` (it stays up) until the block ends."""
    app = broker().celery
    replies = app.control.cancel_consumer(queue, destination=[node(name)], reply=True, timeout=5)
    assert replies, f"worker {name} did not confirm it stopped consuming {queue}"
    try:
        yield
    finally:
        app.control.add_consumer(queue, destination=[node(name)], reply=True, timeout=5)
        # Until its next beat lists the queue again, routing takes the tier for down and falls back:
        # the next test would see that.
        heartbeat_s = get_settings().worker_heartbeat_s
        wait_until(lambda: node(name) in live_workers(job_store().redis, queue, heartbeat_s), 30,
                   f"worker {name} to beat for {queue} again")


def started_worker(name: str, log_dir: Path, queue: str, env: dict | None = None,
                   concurrency: int = 4, extra_args: tuple = ()) -> subprocess.Popen:
    """A worker of the test's own on `queue`, ready to take jobs."""
    proc = start_worker(name, log_dir, env, ["-Q", queue, "--concurrency", str(concurrency), *extra_args])
    wait_ready(name)
    return proc


def stop_warm(proc: subprocess.Popen, timeout: float = 300) -> None:
    """SIGTERM (Celery's warm shutdown: running jobs finish) and wait for the exit."""
    stop_process(proc, timeout)


def wait_until_nothing_in_flight(timeout: float = 300) -> None:
    """Wait until no worker holds an unacknowledged message (kombu's `unacked` hash is empty)."""
    wait_until(lambda: job_store().redis.hlen("unacked") == 0, timeout, "workers to finish what they hold")


def job_record(job_id: str) -> dict:
    return job_store().get(job_id) or {}


def submit(client, headers: dict | None = None, **body) -> str:
    """POST /v1/jobs and return the job id; the answer cache is bypassed, since these jobs must really run."""
    response = client.post("/v1/jobs", json={"cache": False, **body}, headers=headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def queued_messages(queue: str) -> int:
    return broker().queue_depths(job_store())[queue]


def log_lines(log_dir: Path, names: list[str], needle: str) -> list[str]:
    """Lines of the named workers' logs that contain `needle`."""
    lines = []
    for name in names:
        path = log_dir / f"{name}.log"
        if path.exists():
            lines += [line for line in path.read_text(errors="replace").splitlines() if needle in line]
    return lines


def redis_server(port: int, log_dir: Path) -> subprocess.Popen:
    """A throw-away redis-server on `port` (no persistence), answering before this returns."""
    import redis

    # --dir: a replica's full sync writes an RDB file there even without --save.
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(log_dir)], stdout=open(log_dir / f"redis-{port}.log", "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    wait_until(lambda: _pings(client), 20, f"redis-server on port {port}")
    return proc


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.RedisError:
        return False


PYTHONPATH_WITH_TESTS = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
