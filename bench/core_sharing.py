"""`python -m bench.core_sharing`: each tier's engine in a process of its own, as the workers run them,
busy alone and both at once, under each ENGINE_THREADS setting given.

    python -m bench.core_sharing --threads 1,2,0 --width 8 --rounds 2

Prints tokens/s per tier for the large tier alone, then for both tiers busy together (the processes
start their runs at the same moment). ENGINE_THREADS=0 is the host's shared core budget (engines.cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_DELAY_S = 30  # long enough for both processes to load their model before the common start


def child(tier: str, width: int, start_at: float, rounds: int, max_tokens: int) -> None:
    """One tier's engine: wait for the common start, then `rounds` runs of `width` concurrent requests."""
    from bench.engine_speed import _one, run_width
    from engines.provider import get_engine

    engine = get_engine(tier)
    _one(engine, "warm up", 4, [])
    time.sleep(max(0.0, start_at - time.time()))
    rates = [run_width(engine, width, max_tokens)["tokens_per_s"] for _ in range(rounds)]
    print(json.dumps({"tier": tier, "tokens_per_s": rates}), flush=True)


def run(tiers: list[str], threads: str, args: argparse.Namespace) -> list[dict]:
    start_at = time.time() + START_DELAY_S
    env = {**os.environ, "ENGINE_THREADS": threads, "ENGINE_MAX_BATCH": str(args.width)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench.core_sharing", "--child", tier, "--width", str(args.width),
                               "--start-at", str(start_at), "--rounds", str(args.rounds),
                               "--max-tokens", str(args.max_tokens)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for tier in tiers]
    return [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2,0", help="ENGINE_THREADS values to compare")
    parser.add_argument("--width", type=int, default=8, help="concurrent requests per tier")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.width, args.start_at, args.rounds, args.max_tokens)
        return
    for threads in args.threads.split(","):
        for tiers in (["large"], ["small", "large"]):
            print(json.dumps({"ENGINE_THREADS": threads, "busy": tiers, "runs": run(tiers, threads, args)}), flush=True)


if __name__ == "__main__":
    main()
