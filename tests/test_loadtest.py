"""The load test: its traffic mix, its SSE reader, and a short headless Locust run against a live stack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from helpers import free_port, web_command
from loadtest.sse import is_final, sse_events
from loadtest.traffic import TrafficMix
from conftest import stop_process

ROOT = Path(__file__).resolve().parent.parent


def test_traffic_mix_is_mostly_small_with_repeats_and_long_prompts():
    mix = TrafficMix(seed=3)
    drawn = [mix.next() for _ in range(3000)]
    again = TrafficMix(seed=3)
    assert [again.next() for _ in range(20)] == drawn[:20], "a seed makes the traffic repeatable"
    tiers = Counter(r.tier for r in drawn)
    assert 0.55 < tiers["small"] / len(drawn) < 0.65
    assert 0.2 < sum(r.repeated for r in drawn) / len(drawn) < 0.3
    prompts = Counter(r.prompt for r in drawn)
    assert prompts.most_common(1)[0][1] > 50, "popular prompts come back often"
    lengths = Counter(r.length for r in drawn)
    assert lengths["short"] > lengths["medium"] > lengths["long"] > 0
    assert max(len(r.prompt) for r in drawn if r.length == "long") > 1500
    assert len({r.intent for r in drawn}) == 8


def test_distinct_requests_never_repeat():
    drawn = TrafficMix(seed=1).distinct(100)
    assert len({r.prompt for r in drawn}) == 100


def test_sse_reader_splits_named_and_unnamed_events():
    lines = [": keep-alive", "event: token", "data: {\"text\": \"Hel\"}", "", "data: lo", "data: there", "",
             "event: done", "data: {\"status\": \"succeeded\"}", ""]
    events = list(sse_events(lines))
    assert events == [("token", '{"text": "Hel"}'), ("message", "lo\nthere"), ("done", '{"status": "succeeded"}')]
    assert [is_final(*e) for e in events] == [False, False, True]
    assert is_final("message", '{"status": "failed", "error": {}}')
    assert is_final("message", "[DONE]")


@pytest.fixture()
def web_server(workers, artifacts_dir):
    """gunicorn serving the app on a free port, against the session's workers."""
    port = free_port()
    log = open(artifacts_dir / "logs" / "loadtest-web.log", "ab")
    proc = subprocess.Popen(
        web_command(port),
        cwd=ROOT, env={**os.environ, "WAIT_TIMEOUT_S": "240"}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=30).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            raise RuntimeError("gunicorn did not come up; see test-artifacts/logs/loadtest-web.log")
        yield url
    finally:
        stop_process(proc)


def test_short_headless_locust_run_makes_requests_without_failures(web_server, artifacts_dir):
    prefix = artifacts_dir / "loadtest"
    env = {**os.environ, "LOADTEST_THINK_MIN_S": "0.2", "LOADTEST_THINK_MAX_S": "0.5", "LOADTEST_SEED": "1",
           "LOADTEST_MAX_TOKENS_SCALE": "0.25", "LOADTEST_JOB_TIMEOUT_S": "240"}
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "--users", "6",
         "--spawn-rate", "6", "--run-time", "8s", "--stop-timeout", "240", "--host", web_server,
         "--json-file", str(prefix)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    (artifacts_dir / "logs" / "loadtest-locust.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]

    # Written once every user has finished (--stop-timeout lets in-flight jobs end).
    entries = json.loads(Path(f"{prefix}.json").read_text())
    requests_by = {(e["method"], e["name"]): e["num_requests"] for e in entries}
    assert sum(requests_by.values()) > 0
    assert sum(e["num_failures"] for e in entries) == 0, entries
    assert requests_by.get(("POST", "/v1/jobs"), 0) > 0
    assert requests_by.get(("POST", "/generate"), 0) > 0
    assert any(method == "JOB" and count for (method, _), count in requests_by.items()), \
        "no submitted job was followed to its end"


def test_the_run_stops_on_a_failure_ratio(tmp_path):
    # Nothing listens on this port: every request fails, and the guard must end the run early.
    env = {**os.environ, "LOADTEST_THINK_MIN_S": "0.1", "LOADTEST_THINK_MAX_S": "0.2"}
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "--users", "3",
         "--spawn-rate", "3", "--run-time", "300s", "--host", f"http://127.0.0.1:{free_port()}",
         "--max-fail-ratio", "0.2", "--json-file", str(tmp_path / "stats")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "failure ratio 1.00 is above 0.20: stopping" in done.stderr
    entries = json.loads((tmp_path / "stats.json").read_text())
    assert sum(e["num_failures"] for e in entries) >= 10
