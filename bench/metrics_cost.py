"""What Prometheus recording adds to an exact-cache hit, the web app's fastest answer.

    python -m bench.metrics_cost [--requests 3000]

Two in-process Flask test clients side by side, on the Redis at REDIS_URL and a throw-away SQLite file:
one app records its Prometheus figures as deployed, the other has recording replaced by no-ops while it
answers (patched here, in the bench only: the platform has no switch to turn them off). Requests
alternate between the two, so both see the same machine load; the difference of the p50s is the cost.
It runs in two child processes, one per prometheus_client value mode: in memory (a worker, a single
web process) and multiprocess (values in mmap'ed files in PROMETHEUS_MULTIPROC_DIR, as gunicorn's web
processes keep them). Each also times the two recording calls of a hit on their own, and one scrape of
`GET /metrics`. StatsD is off in the children (STATSD_HOST empty), so Prometheus is all that differs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from bench.runner import percentile

MODES = ("memory", "multiprocess")
WARM_UP = 200
BODY = {"prompt": "metrics cost: what is the capital of France?", "max_tokens": 8, "tier": "small"}
RESULT = {"response": "Paris.", "model_used": "m", "tier": "small", "intent": "factual", "score": 0.9,
          "routing": {"intent": "factual", "tier": "small", "score": 0.9}, "tokens": 2, "finish_reason": "stop"}
RECORDERS = ("http_request", "cache_lookup")  # what an exact hit records (monitoring.prometheus)


@contextlib.contextmanager
def recording_off() -> Iterator[None]:
    """Prometheus recording replaced by no-ops for the duration (the hooks look the functions up each time)."""
    from monitoring import prometheus

    saved = {name: getattr(prometheus, name) for name in RECORDERS}
    for name in RECORDERS:
        setattr(prometheus, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(prometheus, name, function)


def _summary(samples_ms: list[float]) -> dict:
    return {"p50_ms": round(percentile(samples_ms, 50), 4), "p95_ms": round(percentile(samples_ms, 95), 4),
            "mean_ms": round(statistics.fmean(samples_ms), 4), "n": len(samples_ms)}


def _apps() -> dict:
    from settings import get_settings
    from tenants.database import upgrade
    from webapp import create_app

    database = f"sqlite:///{tempfile.mkdtemp(prefix='bench-metrics-')}/platform.db"
    upgrade(database)
    base = get_settings().replace(database_url=database, usage_flush_s=0, rate_limit="1000000/minute")
    return {"prometheus on": create_app(base), "prometheus off": create_app(base)}


def _seed(app) -> str:
    """The exact-cache entry every request hits; returns its key."""
    from cache.entries import entry_from_result
    from webapp.context import web
    from webapp.schemas import JobRequestSchema

    with app.app_context():
        cache, job = web().exact_cache, JobRequestSchema().load(BODY)
        cache.index.put(cache.key(job), entry_from_result(job, RESULT))
        return cache.key(job)


def _timed_post(client, off: bool) -> float:
    with recording_off() if off else contextlib.nullcontext():
        started = time.perf_counter()
        response = client.post("/v1/jobs", json=BODY)
        elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200 and response.get_json()["result"]["cached"] == "exact", response.get_json()
    return elapsed


def _hits(apps: dict, requests_n: int) -> dict[str, list[float]]:
    clients = {name: app.test_client() for name, app in apps.items()}
    samples: dict[str, list[float]] = {name: [] for name in clients}
    for turn in range(requests_n + WARM_UP):
        order = list(clients) if turn % 2 == 0 else list(reversed(clients))  # neither always goes first
        for name in order:
            elapsed = _timed_post(clients[name], off=name == "prometheus off")
            if turn >= WARM_UP:  # connection pools filled, scripts loaded, label children created
                samples[name].append(elapsed)
    return samples


def _recording_calls_us(calls: int = 20000) -> float:
    """Microseconds per hit of the recording calls alone, as the hooks make them."""
    from monitoring import prometheus

    started = time.perf_counter()
    for _ in range(calls):
        prometheus.cache_lookup("exact", "hit")
        prometheus.http_request("/v1/jobs", "POST", 200, 0.001)
    return (time.perf_counter() - started) / calls * 1e6


def _scrapes_ms(app, count: int = 200) -> list[float]:
    client, samples = app.test_client(), []
    for _ in range(count):
        started = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(requests_n: int) -> dict:
    """One mode's figures (the mode is whatever this process's environment gives prometheus_client)."""
    from webapp.context import web

    apps = _apps()
    key = _seed(apps["prometheus on"])
    try:
        samples = _hits(apps, requests_n)
        report = {name: _summary(values) for name, values in samples.items()}
        report["added_p50_us"] = round((report["prometheus on"]["p50_ms"] - report["prometheus off"]["p50_ms"]) * 1000,
                                       1)
        report["recording_calls_per_hit_us"] = round(_recording_calls_us(), 2)
        report["scrape GET /metrics"] = _summary(_scrapes_ms(apps["prometheus on"]))
        return report
    finally:
        with apps["prometheus on"].app_context():
            web().exact_cache.index.remove([key])


def run_mode(mode: str, requests_n: int) -> dict:
    """`measure` in a child process: prometheus_client picks its value mode when it is imported."""
    env = {**os.environ, "STATSD_HOST": ""}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory(prefix="bench-prometheus-") as directory:
        if mode == "multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        done = subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--mode", mode,
                               "--requests", str(requests_n)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per client (after a warm-up)")
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (the children's flag)")
    args = parser.parse_args()
    report = measure(args.requests) if args.mode else {mode: run_mode(mode, args.requests) for mode in MODES}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
