"""`make cluster` (`python -m loadtest.cluster [--short]`): the platform on several hosts, and what it does
when hosts fail, proved on one machine with network namespaces (needs root).

Hosts: Redis master and replica, three sentinels, web, routing, two small hosts and one large host, and a
client. Under a load of jobs the run (1) kills a small host in the middle of its jobs (link down, every
process SIGKILLed), (2) adds a new small host, (3) kills the Redis master the same way, (4) drains the
large host (SIGTERM). It prints one JSON line of figures and writes a PNG timeline to `reports/`.
Everything it created is removed at the end, also when it fails: namespaces, processes, and the hosts'
models; the hosts' logs stay in `--dir` when one is given or the run failed. `--short` is `make test`'s version:
fewer clients, shorter gaps, and the hosts' models copied from MODELS_DIR instead of prepared per host.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from loadtest.cluster.hosts import ROOT, Cluster
from loadtest.cluster.netns import Network, enter, namespaces_with_prefix, supported
from loadtest.cluster.scenario import Scenario

PREFIX = "llmc"
REPORTS = ROOT / "reports"


@dataclass(frozen=True)
class Plan:
    """How big and how long a run is."""

    clients: int
    load_before_s: float  # load before the first event
    between_s: float  # load between events
    prepare_per_host: bool  # run `make models`'s steps on each host (else copy MODELS_DIR's files)


FULL = Plan(clients=10, load_before_s=20, between_s=15, prepare_per_host=True)
SHORT = Plan(clients=5, load_before_s=5, between_s=3, prepare_per_host=False)


def remove_stale_runs() -> None:
    """Namespaces left by runs whose process is gone (a run killed before its cleanup)."""
    for name in namespaces_with_prefix(PREFIX):
        pid = name.split("-", 1)[0][len(PREFIX):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            Network(f"{PREFIX}{pid}").teardown()


def run(plan: Plan, directory: Path, models_from: Optional[Path]) -> dict:
    network = Network(f"{PREFIX}{os.getpid()}")
    cluster = Cluster(network, directory, Path(os.environ.get("VENV", ROOT / ".venv")).resolve())
    try:
        network.create()
        cluster.add_host("client")
        enter(network.namespace("client"))  # before any thread: this process is the client host from now on
        return Scenario(cluster, plan, models_from, REPORTS).run()
    finally:
        for host in cluster.hosts.values():
            host.kill_all()
        network.teardown()
        cluster.remove_host_files()


def _stop_on_sigterm() -> None:
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cluster", description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="make test's shorter run")
    parser.add_argument("--dir", type=Path, default=None, help="the hosts' directories and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    ok, why = supported()
    if not ok:
        print(f"make cluster: network namespaces unavailable: {why}", file=sys.stderr)
        return 2
    _stop_on_sigterm()
    remove_stale_runs()
    directory = args.dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"llm-cluster-{os.getpid()}"
    directory.mkdir(parents=True, exist_ok=True)
    plan = SHORT if args.short else FULL
    models_from = None if plan.prepare_per_host else _models_dir()
    print(f"cluster: hosts' directories and logs in {directory}", file=sys.stderr, flush=True)
    result = run(plan, directory, models_from)
    print(json.dumps(result), flush=True)
    if args.dir is None and result["targets_met"]:
        shutil.rmtree(directory, ignore_errors=True)  # the logs are kept when asked for, or when it failed
    return 0 if result["targets_met"] else 1


def _models_dir() -> Path:
    from settings import load_settings

    return load_settings().models_path()


if __name__ == "__main__":
    sys.exit(main())
