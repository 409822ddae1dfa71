"""`python -m bench.cpu_share`: where the platform's CPU goes while N clients wait on `POST /generate`.

    python -m bench.cpu_share --tier small --clients 8,32 --per-client 4

Starts the stack as `make bench` does (bench.stack.platform), then for each client count sends distinct
short prompts (32-token answers, tier forced, cache off) and reads, from /proc, the CPU time each of the
stack's processes and the Redis server spent meanwhile, and Redis's own per-command counts (INFO
commandstats; the server's counters are reset, so use a Redis of the benchmark's own). On 2 cores every
millisecond another process takes also stalls the engine's ggml threads at their next barrier, so this
is the platform's cost beside the engine. Wakeups (voluntary context switches of every thread) count
too: each one that lands while the engine decodes takes a core from a ggml thread, and many short
ones cost the engine more than a few long ones of the same CPU time.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

import psutil
import redis

from bench import stack
from bench.runner import run_clients
from bench.targets import Platform
from loadtest.traffic import TrafficMix

ROLES = (("gunicorn", "web (gunicorn)"), ("small-queue", "small worker"), ("large-queue", "large worker"),
         ("-Q routing", "routing worker"), ("flower", "flower"), ("supervisord", "supervisord"))


def role(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    return next((name for marker, name in ROLES if marker in command), "other")


def stack_processes(url_port: int) -> Iterator[psutil.Process]:
    """supervisord serving the benchmark's port, and everything under it."""
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            if "supervisord" in " ".join(process.info["cmdline"] or []) and \
                    (process.info["environ"] or {}).get("PORT") == str(url_port):
                yield process
                yield from process.children(recursive=True)
                return
        except psutil.Error:
            continue


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, tuple[str, float]]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = (role(process), times.user + times.system)
        except psutil.Error:
            pass
    return seconds


def wakeups(pid: int) -> int:
    """Times the process's threads went to sleep and were woken (voluntary context switches, all threads)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            total += next(int(line.split()[1]) for line in status.read_text().splitlines()
                          if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            pass
    return total


def redis_server(client: redis.Redis) -> psutil.Process:
    return psutil.Process(int(client.info("server")["process_id"]))


def measure(target: Platform, prompts: list[str], clients: int, processes: list[psutil.Process],
            client: redis.Redis) -> dict:
    server = redis_server(client)
    client.config_resetstat()
    everyone = [*processes, server]
    before, server_before = cpu_seconds(processes), sum(server.cpu_times()[:2])
    woken_before = {process.pid: wakeups(process.pid) for process in everyone}
    run = run_clients(target, prompts, clients, max_tokens=32)
    after, server_after = cpu_seconds(processes), sum(server.cpu_times()[:2])
    woken = {process.pid: wakeups(process.pid) - woken_before[process.pid] for process in everyone}
    per_role: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        per_role[name] = per_role.get(name, 0.0) + seconds - before.get(pid, (name, seconds))[1]
    per_role["redis-server"] = server_after - server_before
    woken_per_role: dict[str, int] = {"redis-server": woken.pop(server.pid)}
    for pid, count in woken.items():
        name = after.get(pid, ("other",))[0]
        woken_per_role[name] = woken_per_role.get(name, 0) + count
    commands = sorted(client.info("commandstats").items(), key=lambda item: -item[1]["calls"])
    return {"clients": clients, "requests": len(prompts), "failures": run.failures,
            "tokens_per_s": round(run.tokens_per_s, 1),
            "cpu_ms_per_request": {name: round(seconds / len(prompts) * 1000, 1)
                                   for name, seconds in sorted(per_role.items(), key=lambda item: -item[1])},
            "wakeups_per_request": {name: round(count / len(prompts), 1)
                                    for name, count in sorted(woken_per_role.items(), key=lambda item: -item[1])},
            "redis_calls_per_request": {name.removeprefix("cmdstat_"): round(stats["calls"] / len(prompts), 1)
                                        for name, stats in commands[:16]}}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_share", description=__doc__.split("\n")[0])
    stack.add_platform_arguments(parser)
    parser.add_argument("--tier", default="small", choices=["small", "large"])
    parser.add_argument("--clients", default="8,32")
    parser.add_argument("--per-client", type=int, default=4)
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    prompts = [r.prompt for r in TrafficMix(seed=7).distinct(sum(counts) * args.per_client + 3, lengths=("short",))]
    log = Path("reports") / "bench-cpu-share-platform.log"
    log.parent.mkdir(exist_ok=True)
    with stack.platform(args.port, args.redis_url, 8, log) as url:
        target, client = Platform(url, args.tier), redis.Redis.from_url(args.redis_url)
        for prompt in prompts[:3]:  # warm-up
            target.ask(prompt, 32)
        processes = list(stack_processes(args.port))
        start = 3
        for clients in counts:
            batch = prompts[start:start + clients * args.per_client]
            start += len(batch)
            print(measure(target, batch, clients, processes, client), flush=True)


if __name__ == "__main__":
    main()
