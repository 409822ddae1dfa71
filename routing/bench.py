"""Routing throughput with and without batched encoding: `python -m routing.bench [--threads N]`.

Routes the prompts of a labelled file from N threads at once, as the routing worker's
thread pool does, with each call encoded on its own (max batch 1) and with concurrent
calls merged into shared forward passes. Prints prompts per second and process CPU
time per prompt (the steadier number on a shared host) for each.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from routing.live import configured_files
from routing.labelled import load_labelled
from settings import get_settings

DEFAULT_DATA = "routing/data/dev.jsonl"


def run(router, prompts: list[str], threads: int) -> dict:
    """Route every prompt from `threads` threads; throughput and per-call latency."""
    embedder = router.encode.__self__
    batches_before = embedder.batches

    def timed(prompt: str) -> float:
        started = time.perf_counter()
        router.route(prompt)
        return (time.perf_counter() - started) * 1000

    started, cpu_started = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        latencies = list(pool.map(timed, prompts))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    batches = embedder.batches - batches_before
    return {"max_batch": embedder.max_batch, "threads": threads, "prompts": len(prompts),
            "prompts_per_s": round(len(prompts) / elapsed, 1), "mean_batch": round(len(prompts) / batches, 2),
            # CPU time is what batching saves; wall-clock rates swing with whatever else runs on the host
            "cpu_ms_per_prompt": round(cpu * 1000 / len(prompts), 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="labelled JSON lines whose prompts are routed")
    parser.add_argument("--threads", type=int, default=4, help="concurrent callers (the worker's --concurrency)")
    parser.add_argument("--max-batch", type=int, default=32, help="merge limit for the batched run")
    parser.add_argument("--rounds", type=int, default=2, help="alternate unbatched/batched this many times")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from routing.embedder import routing_embedder
    from routing.live import load_router

    embedder = routing_embedder()
    router = load_router(*configured_files(get_settings()), embedder.encode)
    prompts = [row["prompt"] for row in load_labelled(args.data)]
    router.route("warm up")
    results = []
    for _ in range(args.rounds):  # alternating evens out the load other processes put on the host
        for max_batch in (1, args.max_batch):
            embedder.max_batch = max_batch
            results.append({"backend": embedder.backend, **run(router, prompts, args.threads)})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            label = "unbatched" if r["max_batch"] == 1 else f"batched (max {r['max_batch']})"
            print(f"{r['backend']:<6}{label:<18} {r['prompts']} prompts, {r['threads']} threads: "
                  f"{r['prompts_per_s']:>6} prompts/s, mean batch {r['mean_batch']}, "
                  f"CPU {r['cpu_ms_per_prompt']} ms/prompt, per-call p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
