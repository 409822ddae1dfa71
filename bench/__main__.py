"""`python -m bench` (`make bench`): the same model, prompts and concurrency against three targets.

1. the tier's engine in this process; 2. `mlx_lm.server` on the same model folder;
3. the platform over HTTP (`POST /generate`, tier forced), started from deploy/supervisord.conf.
All three run side by side and take turns, so a busy machine slows them alike.
Each target answers requests one at a time (latency) and runs of N concurrent
clients (aggregate tokens/s). The platform also answers a repeated prompt
(cache-hit latency). Prints the tables and writes JSON and Markdown into reports/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as host
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bench import stack
from bench.runner import Run, run_clients
from bench.targets import DirectEngine, MLXServer, Platform, Target
from loadtest.traffic import TrafficMix

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tier", default=os.environ.get("BENCH_TIER", "large"), choices=["small", "large"],
                        help="the tier (and so the model folder) every target runs")
    parser.add_argument("--max-tokens", type=int, default=int(os.environ.get("BENCH_MAX_TOKENS", "16")))
    # 20, not 10: the p50 of ten requests moved by ±5% between runs on a quiet machine.
    parser.add_argument("--latency-requests", type=int, default=int(os.environ.get("BENCH_LATENCY_REQUESTS", "20")),
                        help="requests sent one at a time for the latency percentiles")
    parser.add_argument("--per-client", type=int, default=int(os.environ.get("BENCH_PER_CLIENT", "2")),
                        help="requests each concurrent client sends")
    parser.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "4,8,16,32"),
                        help="client counts for the throughput runs (one at a time is the latency run)")
    parser.add_argument("--targets", default=os.environ.get("BENCH_TARGETS", "direct,mlx,platform"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8870")),
                        help="the platform's port (Flower gets port+2)")
    parser.add_argument("--mlx-port", type=int, default=int(os.environ.get("BENCH_MLX_PORT", "8871")))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
                        help="a Redis DB for the platform's stack alone: it is flushed")
    parser.add_argument("--out", default=str(ROOT / "reports"))
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""),
                        help="a remark stored with the results, e.g. other load on the machine")
    return parser.parse_args(argv)


class Bench:
    """Runs the same measurement plan against each target and keeps the runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
        needed = args.latency_requests + args.per_client * sum(self.concurrency) + 4
        # Distinct prompts everywhere, so neither a response cache nor a prompt (KV) cache helps a target;
        # short ones (as typed in a chat), so the runs measure generation more than prompt processing.
        prompts = [r.prompt for r in TrafficMix(seed=7).distinct(needed, lengths=("short",))]
        self.latency_prompts = prompts[: args.latency_requests]
        rest = prompts[args.latency_requests:]
        self.sweep_prompts: dict[int, list[str]] = {}
        for clients in self.concurrency:
            count = clients * args.per_client
            self.sweep_prompts[clients], rest = rest[:count], rest[count:]
        self.cache_prompts = rest[:2]
        self.runs: dict[str, dict[int, Run]] = {}
        self.answers: dict[str, list[str]] = {}
        self.extra: dict[str, dict] = {}

    def measure(self, targets: list[Target], throughput_at: dict[str, list[int]],
                after_run: Optional[Callable[[Run], dict]] = None) -> None:
        """Every phase runs on all targets back to back, so they share the same machine conditions.

        One request at a time: the targets take turns prompt by prompt. Concurrent clients:
        one run per target at each client count (`throughput_at` names the counts per target).
        """
        for target in targets:
            log(f"{target.name}: warm-up")
            target.ask("Say hello.", self.args.max_tokens)
        log(f"{len(self.latency_prompts)} requests one at a time, targets taking turns")
        sequential: dict[str, list] = {t.name: [] for t in targets}
        started = {t.name: 0.0 for t in targets}
        for prompt in self.latency_prompts:
            for target in targets:
                run = run_clients(target, [prompt], 1, self.args.max_tokens)
                sequential[target.name] += run.answers
                started[target.name] += run.wall_s
        for target in targets:
            run = Run(target.name, 1, sequential[target.name], started[target.name])
            self.runs.setdefault(target.name, {})[1] = run
            self.answers[target.name] = [a.text for a in run.answers]
            self._show(run, after_run)
        for clients in self.concurrency:
            for target in targets:
                if clients in throughput_at.get(target.name, self.concurrency):
                    log(f"{target.name}: {clients} concurrent clients")
                    run = run_clients(target, self.sweep_prompts[clients], clients, self.args.max_tokens)
                    self.runs[target.name][clients] = run
                    self._show(run, after_run)

    def _show(self, run: Run, after_run: Optional[Callable[[Run], dict]]) -> None:
        extra = after_run(run) if after_run and run.target == "engine in-process" else {}
        self.extra.setdefault(run.target, {})[run.clients] = extra
        details = " ".join(f"{k}={v}" for k, v in extra.items())
        log(f"  {run.target}, {run.clients} clients: {run.tokens} tokens in {run.wall_s:.1f}s = "
            f"{run.tokens_per_s:.1f} tok/s, p50 {run.latency_ms(50):.0f} ms, p99 {run.latency_ms(99):.0f} ms, "
            f"{run.failures} failed, {run.retries} retries {details}")
        for answer in run.answers:
            if answer.error:
                log(f"    failed: {answer.error}")

    def measure_cache(self, target: Platform) -> dict:
        """Ask each cache prompt twice (cache allowed); the second answer is the would-be hit."""
        hits = []
        for prompt in self.cache_prompts:
            first = target.ask(prompt, self.args.max_tokens, use_cache=True)
            second = target.ask(prompt, self.args.max_tokens, use_cache=True)
            hits.append({"miss_ms": round(first.latency_s * 1000, 1), "repeat_ms": round(second.latency_s * 1000, 1),
                         "cached": second.cached})
        log(f"  cache: {hits}")
        return {"repeats": hits, "cache_present": any(h["cached"] for h in hits)}


def log(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", flush=True)


def engine_batching(engine) -> Callable[[Run], dict]:
    """After each run: the mean and peak decode batch width the in-process engine saw during it."""
    last = {"steps": engine.stats.decode_steps, "tokens": engine.stats.tokens}

    def report(run: Run) -> dict:
        steps = engine.stats.decode_steps - last["steps"]
        tokens = engine.stats.tokens - last["tokens"]
        last.update(steps=engine.stats.decode_steps, tokens=engine.stats.tokens)
        return {"mean_batch": round(tokens / steps, 1) if steps else 0.0}

    return report


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a and b else None


def summary(bench: Bench, cache: dict) -> dict:
    direct = bench.runs.get("engine in-process", {})
    mlx = bench.runs.get("mlx_lm.server", {})
    plat = bench.runs.get("platform /generate", {})

    def lat(runs, q):
        return runs[1].latency_ms(q) if 1 in runs else None

    def tps(runs, clients):
        return runs[clients].tokens_per_s if clients in runs else None

    repeats = cache.get("repeats") or []
    repeat_p50 = sorted(h["repeat_ms"] for h in repeats)[len(repeats) // 2] if repeats else None
    same = None
    if "engine in-process" in bench.answers:
        reference = bench.answers["engine in-process"]
        same = {name: sum(a == b for a, b in zip(reference, answers))
                for name, answers in bench.answers.items() if name != "engine in-process"}
    return {
        "overhead_p50": ratio(lat(plat, 50), lat(direct, 50)),
        "overhead_p99": ratio(lat(plat, 99), lat(direct, 99)),
        "throughput_vs_mlx_8": ratio(tps(plat, 8), tps(mlx, 8)),
        "throughput_vs_mlx_32": ratio(tps(plat, 32), tps(mlx, 32)),
        "cache_hit_ms": repeat_p50,
        "cache_present": cache.get("cache_present"),
        "cache_hit_vs_direct_p50": ratio(repeat_p50, lat(direct, 50)),
        "same_answers_as_engine": same,
    }


def markdown(bench: Bench, result: dict) -> str:
    s = result["summary"]
    fmt = lambda v, suffix="×": "n/a" if v is None else f"{v}{suffix}"  # noqa: E731
    cache_note = "" if s["cache_present"] else " (no response cache answered: this is a second, uncached run)"
    lines = [
        f"Run {result['date']} on {result['machine']}; tier {bench.args.tier} ({result['model']}), "
        f"max_tokens {bench.args.max_tokens}, BLAS: {result['blas'] or 'bundled reference'}, "
        f"backend: {result['backend']}." + (f" Note: {bench.args.note}" if bench.args.note else ""),
        "",
        "| ratio | value | goal |",
        "|---|---|---|",
        f"| platform / engine latency, p50, one request at a time | {fmt(s['overhead_p50'])} | ≤ 1.10× |",
        f"| platform / engine latency, p99, one request at a time | {fmt(s['overhead_p99'])} | |",
        f"| platform / mlx_lm.server throughput, 8 clients | {fmt(s['throughput_vs_mlx_8'])} | |",
        f"| platform / mlx_lm.server throughput, 32 clients | {fmt(s['throughput_vs_mlx_32'])} | ≥ 1.0× |",
        f"| cache-hit latency, p50{cache_note} | {fmt(s['cache_hit_ms'], ' ms')} "
        f"({fmt(s['cache_hit_vs_direct_p50'])} of engine p50) | |",
        "",
        "| target | clients | requests | failed | connection retries | tokens | tokens/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in bench.runs.items():
        for clients, run in sorted(runs.items()):
            d = run.as_dict()
            extra = bench.extra.get(name, {}).get(clients, {})
            batch = f" (mean batch {extra['mean_batch']})" if "mean_batch" in extra else ""
            lines.append(f"| {name} | {clients} | {d['requests']} | {d['failures']} | {d['retries']} | {d['tokens']} "
                         f"| {d['tokens_per_s']}{batch} | {d['p50_ms']:.0f} | {d['p99_ms']:.0f} |")
    if s["same_answers_as_engine"]:
        same = ", ".join(f"{k} {v}/{len(bench.latency_prompts)}" for k, v in s["same_answers_as_engine"].items())
        lines += ["", f"Same greedy answers as the in-process engine (one-at-a-time run): {same}."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    os.environ["ENGINE_MAX_BATCH"] = str(max([8, *[int(c) for c in args.concurrency.split(",") if c.strip()]]))
    from engines.blas import enable_fast_blas
    from engines.models import resolve_model
    from engines.provider import backend_name

    bench = Bench(args)
    targets = {t.strip() for t in args.targets.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve_model(args.tier)
    max_batch = int(os.environ["ENGINE_MAX_BATCH"])
    cache: dict = {}
    started = time.time()

    with contextlib.ExitStack() as servers:
        chosen: list[Target] = []
        after_run = None
        if "direct" in targets:
            direct = DirectEngine(args.tier)
            chosen.append(direct)
            after_run = engine_batching(direct.engine)
        if "mlx" in targets:
            url = servers.enter_context(
                stack.mlx_server(spec.load_path, args.mlx_port, max_batch, out / "bench-mlx-server.log"))
            chosen.append(MLXServer(url))
        platform_target = None
        if "platform" in targets:
            url = servers.enter_context(
                stack.platform(args.port, args.redis_url, max_batch, out / "bench-platform.log"))
            platform_target = Platform(url, args.tier)
            chosen.append(platform_target)
        bench.measure(chosen, {"mlx_lm.server": [c for c in bench.concurrency if c in (8, 32)]}, after_run)
        if platform_target:
            cache = bench.measure_cache(platform_target)

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{host.node()} {host.machine()}, {os.cpu_count()} cores, {host.platform()}",
        "model": spec.model_id, "blas": enable_fast_blas(), "backend": backend_name(), "args": vars(args),
        "duration_s": round(time.time() - started),
        "runs": {name: [r.as_dict() | bench.extra.get(name, {}).get(c, {}) for c, r in sorted(runs.items())]
                 for name, runs in bench.runs.items()},
        "cache": cache,
        "summary": summary(bench, cache),
    }
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(bench, result)
    (out / f"bench-{stamp}.md").write_text(table)
    print("\n" + table)
    log(f"done in {result['duration_s']}s; results in {out}/bench-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
