"""Cache benchmarks: semantic lookup cost at N entries, and exact-hit latency through HTTP.

    python -m bench.cache semantic --entries 10000
    python -m bench.cache exact --url http://127.0.0.1:8000 --requests 500

Both use the Redis at REDIS_URL; `semantic` works under its own key prefix and removes it
afterwards; `exact` seeds one entry and asks the running web app for it again and again, from
Python's http.client and, where Debian's `wrk` is installed, from wrk (a C client).
"""
from __future__ import annotations

import argparse
import http.client
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Optional
from urllib.parse import urlsplit

import numpy as np

from engines.provider import served_models
from jobs import redis_client
from jobs.store import JobStore
from settings import get_settings


def _job_store() -> JobStore:
    settings = get_settings()
    return JobStore(redis_client(settings.redis_url, settings.worker_redis_timeout_s), settings.job_ttl_s)


def _percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "mean_ms": round(statistics.fmean(ordered), 3)}


def bench_semantic(entries: int, lookups: int, dimensions: int = 384) -> dict:
    from cache.semantic import SemanticCache

    models = served_models()
    cache = SemanticCache(_job_store(), models, prefix="bench:semantic", max_entries=entries)
    cache.index.clear()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((entries, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    model = models["small"]
    job = lambda i: {"prompt": f"what is the meaning of item {i}", "max_tokens": 8, "temperature": 0.0}  # noqa: E731
    result = {"response": "x", "model_used": model, "tier": "small", "tokens": 8, "finish_reason": "length",
              "intent": "factual", "score": 0.5, "routing": {}}
    started = time.perf_counter()
    for i, vector in enumerate(vectors):
        cache.add(job(i), result, vector)
    fill_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        cache.lookup(job(0), "small", vectors[0])  # the first search copies the whole index into memory
        first_ms = (time.perf_counter() - started) * 1000
        misses, hits = [], []
        for i in rng.integers(0, entries, lookups):
            noise = rng.standard_normal(dimensions).astype(np.float32)
            query = noise / np.linalg.norm(noise)  # far from everything: search cost only
            started = time.perf_counter()
            cache.lookup(job(int(i)), "small", query)
            misses.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            found, _ = cache.lookup(job(int(i)), "small", vectors[i])  # its own entry: search, fetch, guard
            hits.append((time.perf_counter() - started) * 1000)
            assert found is not None
        memory = cache.redis.memory_usage(cache.index.vectors_key) or 0
        return {"entries": cache.index.size(), "fill_s": round(fill_s, 1), "first_lookup_ms": round(first_ms, 1),
                "miss": _percentiles(misses), "hit": _percentiles(hits),
                "mirror_matrix_mb": round(cache.mirror._matrix.nbytes / 2**20, 1),
                "redis_vectors_mb": round(memory / 2**20, 1)}
    finally:
        cache.index.clear()


def _post_json(connection: http.client.HTTPConnection, path: str, payload: dict) -> tuple[int, dict]:
    connection.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _wrk_latency(url: str, path: str, payload: dict, seconds: int) -> Optional[dict]:
    """p50/p99 from wrk (one connection, requests back to back), or None where wrk is not installed.

    A C client shows what the server takes; a Python client adds its own milliseconds.
    """
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(payload))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
        script.flush()
        out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "--latency", "-s", script.name, url + path],
                             capture_output=True, text=True, check=True).stdout
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    found = {q: float(v) * scale[unit] for q, v, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\b", out, re.M)}
    requests_total = re.search(r"(\d+) requests in", out)
    return {"n": int(requests_total.group(1)) if requests_total else None,
            "p50_ms": round(found["50"], 3), "p99_ms": round(found["99"], 3)}


def bench_exact(url: str, requests_count: int, wrk_seconds: int = 5) -> dict:
    from cache.exact import ExactCache
    from webapp.schemas import JobRequestSchema

    exact_cache = ExactCache(_job_store().redis, served_models())

    body = {"prompt": "benchmark: what is the capital of France?", "max_tokens": 8, "tier": "small"}
    routing = {"intent": "factual", "tier": "small", "score": 0.9, "threshold": 0.4, "rule": "forced", "top": []}
    entry = {"response": "Paris.", "model_used": "seeded", "tier": "small", "intent": "factual", "score": 0.9,
             "routing": routing, "tokens": 2, "finish_reason": "stop", "prompt": body["prompt"], "max_tokens": 8,
             "cached_at": time.time()}
    key = exact_cache.key(JobRequestSchema().load(body))
    exact_cache.index.put(key, entry)
    # Interleaved with a request that touches no Redis (a 400), so that both see the same machine load.
    calls = {"POST /v1/jobs (hit)": ("/v1/jobs", body, 200), "POST /generate (hit)": ("/generate", body, 200),
             "baseline: POST /v1/jobs, invalid body": ("/v1/jobs", {"prompt": ""}, 400)}
    timings: dict[str, list[float]] = {name: [] for name in calls}
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
    try:
        for _ in range(requests_count):
            for name, (path, payload, status) in calls.items():
                started = time.perf_counter()
                code, answer = _post_json(connection, path, payload)
                timings[name].append((time.perf_counter() - started) * 1000)
                assert code == status, answer
                if status == 200:
                    assert (answer.get("cached") or answer["result"]["cached"]) == "exact", answer
        report = {"python http.client": {name: _percentiles(samples[10:]) for name, samples in timings.items()}}
        if wrk_seconds > 0 and shutil.which("wrk"):
            report["wrk"] = {name: _wrk_latency(url, path, payload, wrk_seconds)
                             for name, (path, payload, _) in calls.items()}
        return report
    finally:
        connection.close()
        exact_cache.index.remove([key])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    semantic = sub.add_parser("semantic", help="semantic lookup cost at N entries")
    semantic.add_argument("--entries", type=int, default=10000)
    semantic.add_argument("--lookups", type=int, default=200)
    exact = sub.add_parser("exact", help="exact-hit latency through the running web app")
    exact.add_argument("--url", default="http://127.0.0.1:8000")
    exact.add_argument("--requests", type=int, default=500)
    exact.add_argument("--wrk-seconds", type=int, default=5, help="also measure with wrk when installed (0: no)")
    args = parser.parse_args()
    report = bench_semantic(args.entries, args.lookups) if args.which == "semantic" else bench_exact(
        args.url.rstrip("/"), args.requests, args.wrk_seconds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
