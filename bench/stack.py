"""Start and stop the servers the benchmark talks to, on ports and a Redis DB of its own."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import requests

ROOT = Path(__file__).resolve().parent.parent


def _venv() -> str:
    return os.environ.get("VENV") and str(Path(os.environ["VENV"]).resolve()) or sys.prefix


def _wait_until(check, what: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f}s; see {log}")


def stop_process(proc: subprocess.Popen, timeout_s: float = 90) -> None:
    """SIGTERM the process group started with `start_new_session`, SIGKILL it after `timeout_s`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def mlx_server(model_path: str, port: int, decode_concurrency: int, log: Path) -> Iterator[str]:
    """`mlx_lm.server` on `model_path`, with the BLAS (and BLAS threads) this process gave MLX:
    the same footing as the engine."""
    from engines.blas import enable_fast_blas

    env = dict(os.environ)
    if enable_fast_blas():
        env["LD_PRELOAD"] = enable_fast_blas()
        env["OPENBLAS_NUM_THREADS"] = os.environ.get("ENGINE_BLAS_THREADS", "1")
    cmd = [sys.executable, "-m", "mlx_lm.server", "--model", model_path, "--host", "127.0.0.1",
           "--port", str(port), "--decode-concurrency", str(decode_concurrency), "--log-level", "WARNING"]
    with _peer_server(cmd, port, "mlx_lm.server", log, env) as url:
        yield url


@contextlib.contextmanager
def _peer_server(cmd: list[str], port: int, what: str, log: Path, env: Optional[dict] = None) -> Iterator[str]:
    """Start `cmd` (a server with GET /health on `port`), yield its URL once healthy, stop it after."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: requests.get(f"{url}/health", timeout=2).ok, what, 180, proc, log)
        yield url
    finally:
        stop_process(proc)


def llama_server_binary() -> str:
    """llama.cpp's `llama-server`, built once per machine from the pinned sdist (deploy/install-llama-server.sh)."""
    built = subprocess.run([str(ROOT / "deploy" / "install-llama-server.sh")], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "VENV": _venv()})
    return built.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def llama_server(binary: str, gguf: str, port: int, slots: int, seq_ctx: int, log: Path) -> Iterator[str]:
    """`llama-server` on `gguf` with `slots` parallel slots of `seq_ctx` tokens each (the platform's
    ENGINE_SEQ_CTX), and everything else at its defaults: its thread count is the one a user gets."""
    cmd = [binary, "--model", gguf, "--host", "127.0.0.1", "--port", str(port), "--parallel", str(slots),
           "--ctx-size", str(slots * seq_ctx), "--no-webui"]
    with _peer_server(cmd, port, "llama-server", log) as url:
        yield url


def add_platform_arguments(parser: argparse.ArgumentParser) -> None:
    """--port and --redis-url for a benchmark that starts the platform (BENCH_PORT, BENCH_REDIS_URL)."""
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8870")))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))


@contextlib.contextmanager
def platform(port: int, redis_url: str, concurrency: int, log: Path, **env_changes: str) -> Iterator[str]:
    """The whole stack as `make run` starts it (deploy/supervisord.conf), with its own port, Redis DB and
    SQLite database (in its run directory); `env_changes` set more of its environment."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    run_dir = ROOT / ".run" / f"bench-{port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ, "VENV": _venv(), "RUN_DIR": str(run_dir), "HOST": "127.0.0.1", "PORT": str(port),
        "FLOWER_PORT": str(port + 2), "REDIS_URL": redis_url, "WEB_WORKERS": "2",
        "ROUTING_CONCURRENCY": "4", "SMALL_CONCURRENCY": str(concurrency), "LARGE_CONCURRENCY": str(concurrency),
        "WAIT_TIMEOUT_S": "900", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        "DATABASE_URL": f"sqlite:///{run_dir / 'platform.db'}", **env_changes,
    }
    from tenants.database import upgrade

    upgrade(env["DATABASE_URL"])
    cmd = [f"{env['VENV']}/bin/supervisord", "--configuration", str(ROOT / "deploy" / "supervisord.conf")]
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: requests.get(f"{url}/ready", timeout=5).json().get("status") == "ready",
                    "the platform", 240, proc, log)
        yield url
    finally:
        stop_process(proc)
