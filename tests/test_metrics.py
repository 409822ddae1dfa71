"""StatsD metrics as they arrive over UDP, from the test app and the session's real workers.

conftest points STATSD_HOST/PORT at a port of this session with prefix `test`; here a
socket listens on it while real jobs run.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import defaultdict

import pytest

from helpers import broker, exact_cache, job_store, wait_for_job, wait_until_cached

pytestmark = pytest.mark.usefixtures("workers")
PREFIX = os.environ["STATSD_PREFIX"]


class StatsdListener:
    """Collects `name -> [(value, type)]` from the StatsD packets sent to the session's port.

    A thread reads all the time: the workers' queue gauges alone would fill the socket's
    buffer during a slow job, and the kernel would drop the packets under test.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((os.environ["STATSD_HOST"], int(os.environ["STATSD_PORT"])))
        self.sock.settimeout(0.2)
        self.received: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                packet = self.sock.recv(65535).decode()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                for line in packet.splitlines():
                    name, _, rest = line.partition(":")
                    value, _, kind = rest.partition("|")
                    self.received[name.removeprefix(f"{PREFIX}.")].append((float(value), kind.split("|")[0]))

    def drain(self) -> None:
        time.sleep(0.5)
        with self._lock:
            self.received.clear()

    def wait_for(self, names: set[str], timeout: float = 30) -> dict[str, list[tuple[float, str]]]:
        """Wait until every name in `names` has arrived (prefix left off), or the timeout; return all."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if names <= self.received.keys():
                    break
            time.sleep(0.1)
        with self._lock:
            return {name: list(values) for name, values in self.received.items()}

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self.sock.close()


@pytest.fixture(scope="module")
def listener():
    sock = StatsdListener()
    yield sock
    sock.close()


def types_of(received: dict, names: set[str]) -> dict[str, set[str]]:
    return {name: {kind for _, kind in received.get(name, [])} for name in names}


def test_a_generated_job_sends_every_metric_with_its_type(client, listener):
    listener.drain()
    # Forced but looked up in the caches (a unique prompt: both miss), so the routing worker sees it: a
    # forced job that skips the caches goes from the web app straight to its tier.
    response = client.post("/v1/jobs", json={"prompt": f"hey! how's it going today, {uuid.uuid4().hex[:8]}?",
                                              "max_tokens": 3, "tier": "small"})
    view = wait_for_job(client, response.get_json()["id"])
    result, intent = view["result"], view["routing"]["intent"]
    expected = {
        "http.jobs_create_job.202": "ms",
        "cache.exact.small.miss": "c",
        "task.routing.route.queue_wait": "ms",
        "task.routing.route.duration": "ms",
        f"route.intent.{intent}": "c",
        "route.tier.small": "c",
        "route.rule.forced": "c",
        "cache.semantic.small.miss": "c",
        "task.small.generate.queue_wait": "ms",
        "task.small.generate.duration": "ms",
        "generation.small.first_token": "ms",
        "generation.small.tokens": "c",
        "generation.small.tokens_per_s": "g",
        "job.small.latency": "ms",
        "queue.routing.depth": "g",
        "queue.small-queue.depth": "g",
        "queue.large-queue.depth": "g",
        "http.jobs_get_job.200": "ms",
    }
    received = listener.wait_for(set(expected))
    assert types_of(received, set(expected)) == {name: {kind} for name, kind in expected.items()}
    assert result["tokens"] in [value for value, _ in received["generation.small.tokens"]]
    wait_ms = received["task.small.generate.queue_wait"][0][0]
    assert 0 <= wait_ms <= result["latency_ms"]


def test_cache_lookups_are_counted(client, listener):
    # A prompt no earlier test asked, so the semantic lookup misses whatever ran before.
    body = {"prompt": f"Say hello to visitor {uuid.uuid4().hex[:8]}.", "max_tokens": 3, "tier": "small"}
    exact_cache().index.clear()
    wait_for_job(client, client.post("/v1/jobs", json=body).get_json()["id"])
    wait_until_cached(body)
    assert client.post("/v1/jobs", json=body).status_code == 200
    received = listener.wait_for({"cache.exact.small.miss", "cache.semantic.small.miss", "cache.exact.small.hit",
                                  "http.jobs_create_job.200"})
    assert types_of(received, {"cache.exact.small.miss", "cache.exact.small.hit", "cache.semantic.small.miss"}) == {
        "cache.exact.small.miss": {"c"}, "cache.exact.small.hit": {"c"}, "cache.semantic.small.miss": {"c"}}


def test_task_failures_are_counted(listener):
    listener.drain()
    job_id = uuid.uuid4().hex
    job_store().create(job_id, {"not": "a job"})  # a recorded job, so the task runs (and fails) rather than skips
    broker().celery.send_task("tasks.small.generate", args=[{"not": "a job"}, {}], task_id=job_id)  # run_generation fails on it
    received = listener.wait_for({"task.small.generate.failure"})
    assert types_of(received, {"task.small.generate.failure"}) == {"task.small.generate.failure": {"c"}}
