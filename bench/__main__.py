"""`python -m bench` (`make bench`): the same weights, prompts and concurrency against each target, per tier.

Targets: the tier's engine alone, in a process of its own (`direct`); llama.cpp's own `llama-server` on the tier's GGUF
file, built once per machine from the pinned sdist (`llama-server`); `mlx_lm.server` on the tier's MLX
folder (`mlx`); the platform over HTTP (`POST /generate`, tier forced, cache off), started from
deploy/supervisord.conf (`platform`). The default is the first, second and last with the llama.cpp
backend, and `mlx` in place of `llama-server` with MLX.

Per tier, all targets take turns in each phase, so a busy machine slows them alike: requests one at a
time (latency), runs of N concurrent clients (aggregate tokens/s), and a streamed run (time to first
token). Then the mixed run: both tiers busy at once, on the platform and on one peer server per tier
sharing the machine. The platform also answers a repeated prompt (cache-hit latency). Prints the
tables and writes JSON and Markdown into reports/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as host
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from bench import stack
from bench.runner import Run, run_clients, run_together
from bench.targets import DirectEngine, OpenAIServer, Platform, Target
from loadtest.traffic import TrafficMix

ROOT = Path(__file__).resolve().parent.parent
DIRECT, LLAMA, MLX, PLATFORM = "engine alone", "llama-server", "mlx_lm.server", "platform /generate"
PEERS = (LLAMA, MLX)
WARM_UP_REQUESTS = 4  # sent at once: enough to reach both of the platform's web workers


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--tiers", default=os.environ.get("BENCH_TIERS", "small,large"),
                        help="the tiers measured, one after the other (each target runs the tier's weights)")
    parser.add_argument("--max-tokens", type=int, default=int(os.environ.get("BENCH_MAX_TOKENS", "32")))
    parser.add_argument("--slots", type=int, default=int(os.environ.get("BENCH_SLOTS", "8")),
                        help="batch slots per tier: the platform's worker concurrency, the engine's batch, "
                             "llama-server's --parallel and mlx_lm.server's --decode-concurrency")
    # 20, not 10: the p50 of ten requests moved by ±5% between runs on a quiet machine.
    parser.add_argument("--latency-requests", type=int, default=int(os.environ.get("BENCH_LATENCY_REQUESTS", "20")),
                        help="requests sent one at a time for the latency percentiles")
    parser.add_argument("--per-client", type=int, default=int(os.environ.get("BENCH_PER_CLIENT", "3")),
                        help="requests each concurrent client sends")
    # This machine's speed drifts by 10-20% over minutes (other tenants): throughput runs alternate between
    # the targets in rounds (A B B A ...), so a drift reaches every target alike.
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")),
                        help="throughput rounds per client count, targets alternating; each round sends "
                             "--per-client requests per client, distinct prompts in each")
    parser.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "8,32"),
                        help="client counts for the throughput runs (one at a time is the latency run)")
    parser.add_argument("--stream-clients", type=int, default=int(os.environ.get("BENCH_STREAM_CLIENTS", "8")),
                        help="concurrent clients of the streamed run (time to first token); 0 skips it")
    parser.add_argument("--mixed-clients", type=int, default=int(os.environ.get("BENCH_MIXED_CLIENTS", "8")),
                        help="clients per tier in the run with both tiers busy; 0 skips it")
    parser.add_argument("--targets", default=os.environ.get("BENCH_TARGETS", ""),
                        help="direct, llama-server, mlx, platform (default: direct,llama-server,platform with "
                             "llama.cpp, direct,mlx,platform with MLX)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8870")),
                        help="the platform's port (Flower gets port+2)")
    parser.add_argument("--mlx-port", type=int, default=int(os.environ.get("BENCH_MLX_PORT", "8871")))
    parser.add_argument("--llama-port", type=int, default=int(os.environ.get("BENCH_LLAMA_PORT", "8873")),
                        help="llama-server's port (the second tier's, in the mixed run, is port+10)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
                        help="a Redis DB for the platform's stack alone: it is flushed")
    parser.add_argument("--out", default=str(ROOT / "reports"))
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""),
                        help="a remark stored with the results, e.g. other load on the machine")
    return parser.parse_args(argv)


class Bench:
    """Runs the same measurement plan against each target of one tier and keeps the runs."""

    def __init__(self, args: argparse.Namespace, tier: str, seed: int) -> None:
        self.args, self.tier = args, tier
        self.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
        rounds = max(1, args.rounds)
        sizes = [args.latency_requests, *[c * args.per_client * rounds for c in self.concurrency],
                 args.stream_clients * args.per_client, args.mixed_clients * args.per_client, 2]
        # Distinct prompts everywhere, so neither a response cache nor a prompt (KV) cache helps a target;
        # short ones (as typed in a chat), so the runs measure generation more than prompt processing.
        rest = [r.prompt for r in TrafficMix(seed=seed).distinct(sum(sizes) + 4, lengths=("short",))]
        self.latency_prompts, rest = rest[: sizes[0]], rest[sizes[0]:]
        self.sweep_prompts: dict[int, list[list[str]]] = {}  # per client count, each round's prompts
        for clients, size in zip(self.concurrency, sizes[1:-3]):
            per_round = size // rounds
            self.sweep_prompts[clients] = [rest[i * per_round:(i + 1) * per_round] for i in range(rounds)]
            rest = rest[size:]
        self.stream_prompts, rest = rest[: sizes[-3]], rest[sizes[-3]:]
        self.mixed_prompts, rest = rest[: sizes[-2]], rest[sizes[-2]:]
        self.cache_prompts = rest[:2]
        self.runs: dict[str, dict[int, Run]] = {}
        self.streamed: dict[str, Run] = {}
        self.answers: dict[str, list[str]] = {}
        self.extra: dict[str, dict] = {}

    def measure(self, targets: list[Target], throughput_at: dict[str, list[int]],
                after_run: Optional[Callable[[Run], dict]] = None) -> None:
        """Every phase runs on all targets back to back, so they share the same machine conditions.

        One request at a time: the targets take turns prompt by prompt. Concurrent clients: at each client
        count (`throughput_at` names the counts per target), the targets take turns round by round, in
        A B B A order, and each target's rounds add up to its run.
        """
        for target in targets:
            # Concurrent, so that every process of a target (the platform's web workers) has served a request
            # before the timed phases: one request warmed one of them, and the other met its first-use costs there.
            log(f"{self.tier} {target.name}: warm-up, {WARM_UP_REQUESTS} requests at once")
            run_clients(target, [f"Say hello ({n})." for n in range(WARM_UP_REQUESTS)], WARM_UP_REQUESTS,
                        self.args.max_tokens)
        log(f"{self.tier}: {len(self.latency_prompts)} requests one at a time, targets taking turns")
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
            chosen = [t for t in targets if clients in throughput_at.get(t.name, self.concurrency)]
            rounds: dict[str, list[Run]] = {t.name: [] for t in chosen}
            for number, prompts in enumerate(self.sweep_prompts[clients]):
                for target in chosen if number % 2 == 0 else chosen[::-1]:
                    log(f"{self.tier} {target.name}: {clients} concurrent clients, round {number + 1}")
                    rounds[target.name].append(run_clients(target, prompts, clients, self.args.max_tokens))
            for target in chosen:
                run = Run.joined(rounds[target.name])
                self.runs[target.name][clients] = run
                self._show(run, after_run)
        if self.args.stream_clients:
            for target in targets:
                log(f"{self.tier} {target.name}: {self.args.stream_clients} clients streaming")
                run = run_clients(target, self.stream_prompts, self.args.stream_clients, self.args.max_tokens,
                                  stream=True)
                self.streamed[target.name] = run
                self._show(run, None)

    def _show(self, run: Run, after_run: Optional[Callable[[Run], dict]]) -> None:
        extra = after_run(run) if after_run and run.target == DIRECT else {}
        if not run.streamed:
            self.extra.setdefault(run.target, {})[run.clients] = extra
        details = " ".join(f"{k}={v}" for k, v in extra.items())
        first = (f", first token p50 {run.first_token_ms(50):.0f} ms p99 {run.first_token_ms(99):.0f} ms"
                 if run.streamed else "")
        log(f"  {self.tier} {run.target}, {run.clients} clients: {run.tokens} tokens in {run.wall_s:.1f}s = "
            f"{run.tokens_per_s:.1f} tok/s, p50 {run.latency_ms(50):.0f} ms, p99 {run.latency_ms(99):.0f} ms"
            f"{first}, {run.failures} failed, {run.retries} retries {details}")
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


def engine_batching(engine: DirectEngine) -> Callable[[Run], dict]:
    """After each run: the mean decode batch width the engine alone saw during it."""
    last = engine.stats()

    def report(run: Run) -> dict:
        now = engine.stats()
        steps, tokens = now["decode_steps"] - last["decode_steps"], now["tokens"] - last["tokens"]
        last.update(now)
        return {"mean_batch": round(tokens / steps, 1) if steps else 0.0}

    return report


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a and b else None


def run_tiers_at_once(targets: dict[str, Target], prompts: dict[str, list[str]], clients: int,
                      max_tokens: int) -> dict:
    """Both tiers busy at once: `clients` clients per tier, each tier on its own target, started together."""
    runs: dict[str, Run] = {}
    wall = run_together([lambda t=tier: runs.__setitem__(t, run_clients(targets[t], prompts[t], clients, max_tokens))
                         for tier in targets])
    tokens = sum(run.tokens for run in runs.values())
    return {"clients_per_tier": clients, "wall_s": round(wall, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 2), "failures": sum(run.failures for run in runs.values()),
            "per_tier": {tier: run.as_dict() for tier, run in runs.items()}}


def tier_summary(bench: Bench, cache: dict) -> dict:
    direct, plat = bench.runs.get(DIRECT, {}), bench.runs.get(PLATFORM, {})
    peer_name = next((name for name in PEERS if name in bench.runs), None)
    peer = bench.runs.get(peer_name, {})

    def lat(runs, q):
        return runs[1].latency_ms(q) if 1 in runs else None

    def tps(runs, clients):
        return runs[clients].tokens_per_s if clients in runs else None

    def first(name, q):
        return bench.streamed[name].first_token_ms(q) if name in bench.streamed else None

    repeats = cache.get("repeats") or []
    repeat_p50 = sorted(h["repeat_ms"] for h in repeats)[len(repeats) // 2] if repeats else None
    same = None
    if DIRECT in bench.answers:
        reference = bench.answers[DIRECT]
        same = {name: sum(a == b for a, b in zip(reference, answers))
                for name, answers in bench.answers.items() if name != DIRECT}
    overhead = (round(lat(plat, 50) - lat(direct, 50), 1) if lat(plat, 50) and lat(direct, 50) else None)
    paired = paired_overhead_ms(plat.get(1), direct.get(1))
    return {
        "peer": peer_name,
        # peer latency / platform latency: above 1.0 the platform answers one request sooner
        "latency_vs_peer_p50": ratio(lat(peer, 50), lat(plat, 50)),
        **{f"throughput_vs_peer_{c}": ratio(tps(plat, c), tps(peer, c)) for c in bench.concurrency},
        "first_token_p50_ms": {name: round(first(name, 50), 1) for name in bench.streamed},
        "first_token_p99_ms": {name: round(first(name, 99), 1) for name in bench.streamed},
        "overhead_p50_ms": overhead,
        "overhead_paired_p50_ms": paired,
        "overhead_p50": ratio(lat(plat, 50), lat(direct, 50)),
        "cache_hit_ms": repeat_p50,
        "cache_present": cache.get("cache_present"),
        "same_answers_as_engine": same,
    }


def paired_overhead_ms(platform: Optional[Run], engine: Optional[Run]) -> Optional[float]:
    """The median over prompts of (platform − engine alone) latency for the same prompt, one request at a time.

    Both answer each prompt with the same greedy tokens, so each difference is that request's overhead; the
    difference of the two p50s also carries how far apart the two p50 prompts' answers are."""
    if platform is None or engine is None:
        return None
    pairs = [(p.latency_s - e.latency_s) * 1000 for p, e in zip(platform.answers, engine.answers)
             if not p.error and not e.error]
    return round(statistics.median(pairs), 1) if pairs else None


def markdown(result: dict, benches: dict[str, Bench]) -> str:
    fmt = lambda v, suffix="×": "n/a" if v is None else f"{v}{suffix}"  # noqa: E731
    args = result["args"]
    lines = [
        f"Run {result['date']} on {result['machine']}; max_tokens {args['max_tokens']}, {args['slots']} slots per "
        f"tier, backend {result['backend']}, BLAS {result['blas'] or 'bundled reference'}."
        + (f" Note: {args['note']}" if args["note"] else ""), ""]
    for tier, bench in benches.items():
        s = result["tiers"][tier]["summary"]
        peer = s["peer"] or "peer"
        lines += [f"#### Tier {tier} ({result['tiers'][tier]['model']})", "",
                  "| ratio | value | goal |", "|---|---|---|",
                  f"| {peer} / platform latency, p50, one request at a time | {fmt(s['latency_vs_peer_p50'])} | ≥ 0.9× |"]
        lines += [f"| platform / {peer} throughput, {c} clients | {fmt(s[f'throughput_vs_peer_{c}'])} | ≥ 1.0× |"
                  for c in bench.concurrency]
        lines += [f"| platform − engine latency, p50, one at a time | {fmt(s['overhead_p50_ms'], ' ms')} | ≤ 15 ms |",
                  f"| the same, per prompt: median of (platform − engine) | {fmt(s['overhead_paired_p50_ms'], ' ms')} "
                  "| ≤ 15 ms |"]
        if s["cache_hit_ms"] is not None:
            lines += [f"| cache-hit latency, p50 | {fmt(s['cache_hit_ms'], ' ms')} | |"]
        lines += ["", "| target | clients | requests | failed | tokens | tokens/s | p50 ms | p99 ms "
                      "| first token p50 / p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for name, runs in bench.runs.items():
            rows = sorted(runs.items()) + ([("streamed", bench.streamed[name])] if name in bench.streamed else [])
            for clients, run in rows:
                d = run.as_dict()
                extra = bench.extra.get(name, {}).get(clients, {}) if clients != "streamed" else {}
                batch = f" (mean batch {extra['mean_batch']})" if "mean_batch" in extra else ""
                first = (f"{run.first_token_ms(50):.0f} / {run.first_token_ms(99):.0f}" if run.streamed else "")
                label = f"{run.clients}, streamed" if run.streamed else str(clients)
                lines.append(f"| {name} | {label} | {d['requests']} | {d['failures']} | {d['tokens']} "
                             f"| {d['tokens_per_s']}{batch} | {d['p50_ms']:.0f} | {d['p99_ms']:.0f} | {first} |")
        if s["same_answers_as_engine"]:
            same = ", ".join(f"{k} {v}/{len(bench.latency_prompts)}" for k, v in s["same_answers_as_engine"].items())
            lines += ["", f"Same greedy answers as the engine alone (one-at-a-time run): {same}."]
        lines.append("")
    mixed = result.get("mixed") or {}
    if mixed:
        lines += ["#### Both tiers busy at once", "",
                  "| target | clients per tier | tokens | tokens/s | small tok/s | large tok/s | failed |",
                  "|---|---|---|---|---|---|---|"]
        for name, run in mixed.items():
            if name == "ratio":
                continue
            per = run["per_tier"]
            lines.append(f"| {name} | {run['clients_per_tier']} | {run['tokens']} | {run['tokens_per_s']} "
                         f"| {per.get('small', {}).get('tokens_per_s')} | {per.get('large', {}).get('tokens_per_s')} "
                         f"| {run['failures']} |")
        lines += ["", f"Platform / peers, both tiers busy: {fmt(mixed.get('ratio'))} (goal ≥ 1.0×).", ""]
    return "\n".join(lines)


def default_targets(backend: str) -> str:
    return "direct,llama-server,platform" if backend == "llamacpp" else "direct,mlx,platform"


def peer_server(name: str, tier: str, port: int, args: argparse.Namespace, binary: Optional[str],
                out: Path) -> contextlib.AbstractContextManager:
    """The peer server of `tier` on `port`: llama-server on the tier's GGUF, or mlx_lm.server on its folder."""
    from engines.models import resolve_model
    from settings import get_settings

    if name == LLAMA:
        from engines.llamacpp_models import resolve_gguf

        return stack.llama_server(binary, resolve_gguf(tier).path, port, args.slots, get_settings().engine_seq_ctx,
                                  out / f"bench-llama-server-{tier}.log")
    return stack.mlx_server(resolve_model(tier).load_path, port, args.slots, out / f"bench-mlx-server-{tier}.log")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    os.environ["ENGINE_MAX_BATCH"] = str(args.slots)
    from engines.blas import enable_fast_blas
    from engines.provider import backend_name, served_spec

    backend = backend_name()
    chosen = {t.strip() for t in (args.targets or default_targets(backend)).split(",") if t.strip()}
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    peer = LLAMA if "llama-server" in chosen else MLX if "mlx" in chosen else None
    peer_port = args.llama_port if peer == LLAMA else args.mlx_port
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    binary = stack.llama_server_binary() if peer == LLAMA else None
    started = time.time()
    benches: dict[str, Bench] = {}
    result: dict = {"tiers": {}, "args": vars(args), "backend": backend, "blas": enable_fast_blas()}

    with contextlib.ExitStack() as servers:
        platform_url = servers.enter_context(stack.platform(
            args.port, args.redis_url, args.slots, out / "bench-platform.log")) if "platform" in chosen else None
        for seed, tier in enumerate(tiers, start=7):
            bench = benches[tier] = Bench(args, tier, seed)
            with contextlib.ExitStack() as tier_servers:
                targets: list[Target] = []
                after_run = None
                if "direct" in chosen:
                    direct = DirectEngine(tier)
                    tier_servers.callback(direct.close)
                    targets.append(direct)
                    after_run = engine_batching(direct)
                if peer:
                    url = tier_servers.enter_context(peer_server(peer, tier, peer_port, args, binary, out))
                    targets.append(OpenAIServer(peer, url))
                plat = Platform(platform_url, tier) if platform_url else None
                targets += [plat] if plat else []
                bench.measure(targets, {MLX: [c for c in bench.concurrency if c in (8, 32)]}, after_run)
            cache = bench.measure_cache(plat) if plat else {}
            result["tiers"][tier] = {
                "model": served_spec(tier)[0],
                "runs": {name: [r.as_dict() | bench.extra.get(name, {}).get(c, {}) for c, r in sorted(runs.items())]
                         for name, runs in bench.runs.items()},
                "streamed": {name: run.as_dict() for name, run in bench.streamed.items()},
                "cache": cache, "summary": tier_summary(bench, cache)}
        if args.mixed_clients and len(tiers) > 1 and (peer or platform_url):
            result["mixed"] = measure_mixed(args, benches, peer, peer_port, binary, platform_url, out)

    result.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  machine=f"{host.node()} {host.machine()}, {os.cpu_count()} cores, {host.platform()}",
                  duration_s=round(time.time() - started))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result, benches)
    (out / f"bench-{stamp}.md").write_text(table)
    print("\n" + table)
    log(f"done in {result['duration_s']}s; results in {out}/bench-{stamp}.json and .md")
    return 0


def measure_mixed(args: argparse.Namespace, benches: dict[str, Bench], peer: Optional[str], peer_port: int,
                  binary: Optional[str], platform_url: Optional[str], out: Path) -> dict:
    """Both tiers busy at once: the platform (one stack, both tiers) and one peer server per tier, side by side."""
    tiers = list(benches)
    prompts = {tier: bench.mixed_prompts for tier, bench in benches.items()}
    mixed: dict = {}
    with contextlib.ExitStack() as servers:
        if peer:
            # ports 10 apart: BENCH_MLX_PORT + 1 would be Flower's (BENCH_PORT + 2)
            urls = {tier: servers.enter_context(peer_server(peer, tier, peer_port + 10 * i, args, binary, out))
                    for i, tier in enumerate(tiers)}
            log(f"both tiers at once: two {peer}s, {args.mixed_clients} clients each")
            mixed[f"{peer} × {len(tiers)}"] = run_tiers_at_once(
                {tier: OpenAIServer(peer, urls[tier]) for tier in tiers}, prompts, args.mixed_clients, args.max_tokens)
        if platform_url:
            log(f"both tiers at once: the platform, {args.mixed_clients} clients per tier")
            mixed[PLATFORM] = run_tiers_at_once({tier: Platform(platform_url, tier) for tier in tiers}, prompts,
                                                args.mixed_clients, args.max_tokens)
    for name, run in mixed.items():
        log(f"  {name}: {run['tokens']} tokens in {run['wall_s']}s = {run['tokens_per_s']} tok/s, "
            f"{run['failures']} failed")
    if peer and platform_url:
        mixed["ratio"] = ratio(mixed[PLATFORM]["tokens_per_s"], mixed[f"{peer} × {len(tiers)}"]["tokens_per_s"])
    return mixed


if __name__ == "__main__":
    sys.exit(main())
