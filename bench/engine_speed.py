"""`python -m bench.engine_speed`: one tier's engine in this process, tokens/s at several concurrent widths.

Picks the engine as the workers do (ENGINE_BACKEND, <TIER>_GGUF_TYPE, ENGINE_THREADS, ...), so
comparing backends or weight types is a matter of environment:

    python -m bench.engine_speed --tier large
    LARGE_GGUF_TYPE=q8_0 python -m bench.engine_speed --tier large
    ENGINE_BACKEND=mlx python -m bench.engine_speed --tier large

Each width runs that many requests at once (distinct prompts, max_tokens each) and reports
aggregate tokens/s (prompt processing included), the median time to first token, and the
decode-only rate of one stream (width 1).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from bench.runner import run_together
from engines.base import GenerationRequest
from engines.provider import backend_name, get_engine, served_models


def _one(engine, prompt: str, max_tokens: int, results: list) -> None:
    started, first, tokens = time.perf_counter(), None, 0
    for chunk in engine.generate(GenerationRequest([{"role": "user", "content": prompt}], max_tokens)):
        first = first or time.perf_counter()
        tokens += chunk.token is not None and chunk.finish_reason != "stop"
    results.append((tokens, first - started, time.perf_counter() - started))


def run_width(engine, width: int, max_tokens: int) -> dict:
    results: list = []
    elapsed = run_together([lambda i=i: _one(engine, f"Write a short story about robot number {i}.", max_tokens,
                                             results) for i in range(width)])
    tokens = sum(r[0] for r in results)
    row = {"width": width, "tokens": tokens, "seconds": round(elapsed, 2), "tokens_per_s": round(tokens / elapsed, 1),
           "first_token_ms_p50": round(statistics.median(r[1] for r in results) * 1000)}
    if width == 1:
        count, first_s, total_s = results[0]
        row["decode_tokens_per_s"] = round((count - 1) / (total_s - first_s), 1) if count > 1 else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", default="large", choices=["small", "large"])
    parser.add_argument("--widths", default="1,8,16,32")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    os.environ.setdefault("ENGINE_MAX_BATCH", str(max(widths)))
    engine = get_engine(args.tier)
    _one(engine, "warm up", 4, [])
    print(json.dumps({"backend": backend_name(), "model": served_models()[args.tier],
                      "max_batch": os.environ["ENGINE_MAX_BATCH"], "threads": os.environ.get("ENGINE_THREADS", "0")}),
          flush=True)
    for width in widths:
        print(json.dumps(run_width(engine, width, args.max_tokens)), flush=True)


if __name__ == "__main__":
    main()
