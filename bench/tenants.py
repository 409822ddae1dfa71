"""Tenant benchmarks: what the key and usage path adds to a cache hit, and what a flood from one key
does to another key's latency.

    python -m bench.tenants keypath --requests 2000
    python -m bench.tenants flood --jobs 12 --flooders 16

`keypath` runs three apps in this process on the Redis at REDIS_URL and a throw-away SQLite file:
API keys required (a key with a budget: lookup, budget check, usage count, rate limit), the same
with Flask-Limiter switched off, and no keys; it alternates exact-hit requests between them, and
the differences of the p50s are the costs of the key and usage path and of the rate limit. `flood`
starts the stack as `make run` does (keys on, BENCH_PORT, BENCH_REDIS_URL) and times a
quiet key's jobs alone, then while another key floods the small tier from many clients, with fair
share on and off (`--a-max-in-flight` caps the flooding key too). Results go to reports/.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import requests

from bench import stack
from bench.runner import percentile

ROOT = Path(__file__).resolve().parent.parent


def bench_keypath(requests_n: int) -> dict:
    from cache.entries import entry_from_result
    from settings import get_settings
    from webapp import create_app
    from webapp.context import web
    from webapp.schemas import JobRequestSchema

    database = f"sqlite:///{tempfile.mkdtemp(prefix='bench-tenants-')}/platform.db"
    from tenants.database import upgrade

    upgrade(database)
    base = get_settings().replace(database_url=database, usage_flush_s=0, rate_limit="1000000/minute")
    apps = {"keys on": create_app(base.replace(api_keys_required=True)), "keys off": create_app(base),
            "keys on, no rate limit": create_app(base.replace(api_keys_required=True))}
    for limiter in apps["keys on, no rate limit"].extensions["limiter"]:
        limiter.enabled = False  # isolates the key and usage path from Flask-Limiter's own cost
    with apps["keys on"].app_context():
        key, record = web().tenants.keys.create("bench", monthly_token_budget=10 ** 12)
    body = {"prompt": "What is the capital of France?", "max_tokens": 8}
    result = {"response": "Paris.", "model_used": "m", "tier": "small", "intent": "factual", "score": 0.9,
              "routing": {"intent": "factual", "tier": "small", "score": 0.9}, "tokens": 2, "finish_reason": "stop"}
    headers = {"keys on": {"Authorization": f"Bearer {key}"}, "keys off": {},
               "keys on, no rate limit": {"Authorization": f"Bearer {key}"}}
    for name, app in apps.items():
        with app.app_context():
            job = {**JobRequestSchema().load(body), **({"key_id": record["id"]} if name != "keys off" else {})}
            web().exact_cache.index.put(web().exact_cache.key(job), entry_from_result(job, result))
    clients = {name: app.test_client() for name, app in apps.items()}
    samples = {name: [] for name in apps}
    for turn in range(requests_n + 100):
        for name, client in clients.items():
            started = time.perf_counter()
            response = client.post("/v1/jobs", json=body, headers=headers[name])
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.get_data(as_text=True)
            if turn >= 100:  # warm-up: connection pools, scripts loaded
                samples[name].append(elapsed)
    report = {name: {"p50_ms": round(percentile(s, 50), 3), "p95_ms": round(percentile(s, 95), 3),
                     "mean_ms": round(statistics.fmean(s), 3), "n": len(s)} for name, s in samples.items()}
    off = report["keys off"]["p50_ms"]
    report["added_p50_ms"] = {"key and usage path": round(report["keys on, no rate limit"]["p50_ms"] - off, 3),
                              "with the rate limit": round(report["keys on"]["p50_ms"] - off, 3)}
    return report


TIMINGS = ("queue_ms", "routing_ms", "first_token_ms", "generation_ms")


def _generate(url: str, key: str, prompt: str, max_tokens: int) -> tuple[float, str]:
    started = time.perf_counter()
    response = requests.post(f"{url}/generate", json={"prompt": prompt, "max_tokens": max_tokens, "tier": "small",
                                                      "cache": False},
                             headers={"Authorization": f"Bearer {key}"}, timeout=900)
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000, response.json()["id"]


def _quiet_run(url: str, key: str, jobs: int, max_tokens: int) -> tuple[list[float], dict]:
    """The quiet key's latencies, and the median of each part of its jobs' time (from their records)."""
    latencies, parts = [], {name: [] for name in TIMINGS}
    for n in range(jobs):
        latency, job_id = _generate(url, key, f"Name a city that starts with the letter {chr(65 + n % 26)}.",
                                    max_tokens)
        latencies.append(latency)
        result = requests.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"},
                              timeout=30).json()["result"]
        for name in TIMINGS:
            parts[name].append(result[name])
    return latencies, {name: round(statistics.median(values), 1) for name, values in parts.items()}


def _flood(url: str, key: str, flooders: int, max_tokens: int, stop: threading.Event) -> None:
    def loop(n: int) -> None:
        while not stop.is_set():
            try:
                _generate(url, key, f"Write a long list of fruit, number {n}.", max_tokens)
            except requests.HTTPError as refused:  # a 429 (cap, queue full): back off as it says
                time.sleep(float(refused.response.headers.get("Retry-After", 1)))
            except requests.RequestException:
                time.sleep(1)

    for n in range(flooders):
        threading.Thread(target=loop, args=(n,), daemon=True).start()


def bench_flood(args: argparse.Namespace) -> dict:
    from jobs import redis_client
    from settings import get_settings
    from tenants.service import Tenants

    report = {}
    for fair in args.fair_share.split(","):
        log = Path(args.out) / f"bench-tenants-fair{fair}.log"
        with stack.platform(args.port, args.redis_url, args.slots, log, API_KEYS_REQUIRED="1", FAIR_SHARE=fair,
                            RATE_LIMIT="100000/minute") as url:
            run_dir = ROOT / ".run" / f"bench-{args.port}"
            settings = get_settings().replace(redis_url=args.redis_url, database_url=f"sqlite:///{run_dir}/platform.db")
            keys = Tenants.build(settings, redis_client(args.redis_url, 5)).keys
            quiet, _ = keys.create("quiet")
            flooder, _ = keys.create("flooder", max_in_flight=args.a_max_in_flight)
            _quiet_run(url, quiet, 2, args.max_tokens)  # warm-up
            idle, idle_parts = _quiet_run(url, quiet, args.jobs, args.max_tokens)
            stop = threading.Event()
            _flood(url, flooder, args.flooders, args.flood_max_tokens, stop)
            time.sleep(10)  # let the flood fill the queue
            flooded, flooded_parts = _quiet_run(url, quiet, args.jobs, args.max_tokens)
            stop.set()
            report[f"fair_share={fair}"] = {
                "idle_p50_ms": round(percentile(idle, 50), 1), "flooded_p50_ms": round(percentile(flooded, 50), 1),
                "ratio": round(percentile(flooded, 50) / percentile(idle, 50), 2),
                "idle_parts_p50": idle_parts, "flooded_parts_p50": flooded_parts,
                "idle_ms": [round(x) for x in idle], "flooded_ms": [round(x) for x in flooded]}
            print(json.dumps({f"fair_share={fair}": {k: v for k, v in report[f"fair_share={fair}"].items()
                                                     if not k.endswith("_ms") or "p50" in k}}), flush=True)
    return report


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tenants", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keypath = commands.add_parser("keypath")
    keypath.add_argument("--requests", type=int, default=2000)
    flood = commands.add_parser("flood")
    flood.add_argument("--jobs", type=int, default=12, help="the quiet key's jobs, one at a time, per run")
    flood.add_argument("--max-tokens", type=int, default=16)
    flood.add_argument("--flooders", type=int, default=16, help="the flooding key's concurrent clients")
    flood.add_argument("--flood-max-tokens", type=int, default=32)
    flood.add_argument("--slots", type=int, default=8, help="each tier's concurrency and ENGINE_MAX_BATCH")
    flood.add_argument("--a-max-in-flight", type=int, default=None, help="the flooding key's --max-in-flight")
    flood.add_argument("--fair-share", default="1,0", help="FAIR_SHARE values to run, one stack each")
    stack.add_platform_arguments(flood)
    for command in (keypath, flood):
        command.add_argument("--out", default=str(ROOT / "reports"))
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = bench_keypath(args.requests) if args.command == "keypath" else bench_flood(args)
    path = Path(args.out) / f"tenants-{args.command}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report if args.command == "keypath" else {k: {m: v[m] for m in ("idle_p50_ms", "flooded_p50_ms",
                                                                                   "ratio")}
                                                               for k, v in report.items()}, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
