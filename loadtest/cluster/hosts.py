"""The cluster's hosts and what runs on them: Redis with Sentinel, and the platform's roles started with the
documented per-role commands (deploy/supervisord.conf's, word for word, as on a real host).

Each host is a network namespace with a hostname of its own (a UTS namespace, so Celery's `%h` names
workers after their host), a directory of its own (its MODELS_DIR, database and logs: no shared
filesystem) and only its own processes.
"""
from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from loadtest.cluster.netns import Network

ROOT = Path(__file__).resolve().parents[2]
SUPERVISORD_CONF = ROOT / "deploy" / "supervisord.conf"
REDIS_NODE_SCRIPT = ROOT / "deploy" / "redis-node.sh"
SENTINEL_MASTER = "llm-redis"
REDIS_PORT, SENTINEL_PORT, WEB_PORT = 6379, 26379, 8000
# The cluster's hosts share this machine's cores: one ggml thread per engine, fewer slots, one web worker.
CLUSTER_ENV = {
    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ENGINE_THREADS": "1", "WEB_WORKERS": "1",
    "ROUTING_CONCURRENCY": "2", "SMALL_CONCURRENCY": "4", "LARGE_CONCURRENCY": "4", "STATSD_HOST": "",
    "REDIS_SENTINEL_MASTER": SENTINEL_MASTER, "REDIS_MIN_REPLICAS": "1", "ALLOW_OPEN_ACCESS": "1",
    "RATE_LIMIT": "100000/minute", "READ_RATE_LIMIT": "100000/minute", "PORT": str(WEB_PORT),
}


def role_command(role: str, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """supervisord's command for `role` with `env` filled in, and the environment its program adds."""
    conf = configparser.RawConfigParser()
    conf.read(SUPERVISORD_CONF)
    section = conf[f"program:{role}"]

    def fill(text: str) -> str:
        return re.sub(r"%\(ENV_(\w+)\)s", lambda match: env[match.group(1)], text).replace("%%", "%")

    extra = dict(re.findall(r'(\w+)="([^"]*)"', fill(section.get("environment", ""))))
    return shlex.split(fill(section["command"])), extra


@dataclass
class Host:
    """One host: its namespace, address, directory and the processes it runs."""

    name: str
    namespace: str
    address: str
    directory: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, label: str, argv: list[str], env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Run `argv` on this host (its network, its hostname), logging to its directory."""
        log = open(self.directory / f"{label}.log", "ab")
        wrapped = ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', self.name, *argv]
        process = subprocess.Popen(wrapped, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[label] = process
        return process

    def run(self, label: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        """Run a preparation step on this host to its end."""
        process = self.start(label, argv, env)
        if process.wait(timeout) != 0:
            raise RuntimeError(f"{self.name}: {' '.join(argv)} failed; see {self.directory / label}.log")

    def signal(self, label: str, signum: int) -> None:
        process = self.processes.get(label)
        if process is not None and process.poll() is None:
            _signal_group(process, signum)

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGKILL)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


@dataclass
class Cluster:
    """The hosts of one run on one `Network`, and the environment every platform process shares."""

    network: Network
    directory: Path
    venv: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    sentinels: list[str] = field(default_factory=list)

    def add_host(self, name: str) -> Host:
        address = self.network.add_host(name)
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        self.hosts[name] = Host(name, self.network.namespace(name), address, directory)
        return self.hosts[name]

    def remove_host_files(self) -> None:
        """What the hosts wrote but their logs: each host's models (about 1.4 GB when prepared), caches
        and run files."""
        for host in self.hosts.values():
            for name in ("models", "hf", "run", "cores", "prometheus"):
                shutil.rmtree(host.directory / name, ignore_errors=True)

    def platform_env(self, host: Host) -> dict[str, str]:
        """What a platform process on `host` reads: the sentinels, and this host's own directory."""
        return {
            **CLUSTER_ENV, "VENV": str(self.venv), "RUN_DIR": str(host.directory / "run"),
            "REDIS_URL": ";".join(f"sentinel://{address}:{SENTINEL_PORT}/0" for address in self.sentinels),
            "MODELS_DIR": str(host.directory / "models"), "ENGINE_CORE_DIR": str(host.directory / "cores"),
            "HOST": host.address, "METRICS_HOST": host.address, "HF_HOME": str(host.directory / "hf"),
            "DATABASE_URL": f"sqlite:///{host.directory / 'platform.db'}",
            "PROMETHEUS_MULTIPROC_DIR": str(host.directory / "prometheus"),
        }

    # --- Redis --------------------------------------------------------------------------------------------------

    def start_redis(self, host: Host, first_master: Host) -> None:
        """Redis on `host` as deploy/redis-node.sh starts a data node: a replica of the master the sentinels
        name (or of `first_master` before any sentinel runs), the master only when it is that master."""
        argv = ["redis-server", "--bind", host.address, "--port", str(REDIS_PORT), "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--dir", str(host.directory)]
        env = {"NODE": host.address, "FIRST_MASTER": first_master.address, "MASTER_NAME": SENTINEL_MASTER,
               "SENTINELS": " ".join(f"{address}:{SENTINEL_PORT}" for address in self.sentinels),
               "REDIS_PORT": str(REDIS_PORT), "DATA_DIR": str(host.directory)}
        host.start("redis", ["sh", str(REDIS_NODE_SCRIPT), *argv], env)

    def start_sentinel(self, host: Host, master: str, down_after_ms: int) -> None:
        conf = host.directory / "sentinel.conf"  # Sentinel rewrites its file: one per host
        conf.write_text(f"port {SENTINEL_PORT}\nbind {host.address}\nprotected-mode no\n"
                        f"sentinel monitor {SENTINEL_MASTER} {master} {REDIS_PORT} 2\n"
                        f"sentinel down-after-milliseconds {SENTINEL_MASTER} {down_after_ms}\n"
                        f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n")
        host.start("sentinel", ["redis-server", str(conf), "--sentinel"])
        self.sentinels.append(host.address)

    # --- The platform's roles -----------------------------------------------------------------------------------

    def prepare(self, host: Host, steps: list[str], models_from: Optional[Path], timeout: float) -> None:
        """`make models`'s steps on `host`, into its own MODELS_DIR (or a copy of `models_from`'s files)."""
        env = self.platform_env(host)
        if models_from is not None:
            subprocess.run(["cp", "-al", str(models_from), env["MODELS_DIR"]], check=True)
            return
        for step in steps:
            host.run(f"prepare-{step}", [str(self.venv / "bin" / "python"), "-m", step], env, timeout)

    def start_role(self, host: Host, role: str) -> None:
        env = self.platform_env(host)
        os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        if role == "web":
            host.run("migrate", [str(self.venv / "bin" / "python"), "-m", "tenants.database"], env, 120)
        argv, extra = role_command(role, env)
        host.start(role, argv, {**env, **extra})


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll `condition` until it is true; the seconds it took. A timeout names what never happened."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except Exception:  # the thing polled may not answer yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g}s")
