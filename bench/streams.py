"""Open streams against request latency: N concurrent SSE streams, and an exact-cache hit meanwhile.

    python -m bench.streams --streams 1000                       # gevent, as deployed
    python -m bench.streams --streams 1000 --worker-class gthread --workers 2 --threads 16

It starts its own gunicorn on a free port (one worker unless `--workers`) and, unless
`--redis-url` names a DB to use (and flush), its own redis-server on a free port, so that Redis's
counters count this benchmark only. It creates job records that stay open (no Celery worker:
their streams only send heartbeats, every `--heartbeat-s`) and seeds one exact-cache entry as
`bench.cache` does. Then, side by side in one run:

1. idle: `--requests` exact-cache hits `POST /v1/jobs`, one at a time on one keep-alive connection;
2. it opens `--streams` concurrent `GET /v1/jobs/<id>/stream` connections, all at once, from a
   client process of their own (asyncio, raw sockets), each counted open once its first event
   (the job's `start`) arrives;
3. for `--measure-s` with the streams open and no requests: the web workers' CPU, Redis's CPU
   and calls per command, the web workers' connections to Redis, their RSS;
4. loaded: the same requests while every stream stays open;
5. it closes the streams, and runs the requests once more (idle again).

It reports p50/p95/max per phase, errors (a request that failed or took over `--request-timeout-s`,
a stream that did not open, was cut or sent an error) and the workers' RSS before and with the
streams open, divided by the streams. `--token-rate` also publishes that many tokens per second to
the first job (`--jobs 1` puts every stream on it). `--source DIR` serves the app from another
checkout (e.g. `git archive` of an older commit) for before/after comparisons. Writes the report
as JSON to stdout; gunicorn's and Redis's logs go to `.run/bench-streams*.log`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import queue
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
BODY = {"prompt": "benchmark: what is the capital of France?", "max_tokens": 8, "tier": "small"}


def _percentiles(samples_ms: list[float]) -> dict:
    if not samples_ms:
        return {"n": 0}
    ordered = sorted(samples_ms)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"n": len(ordered), "p50_ms": pick(0.5), "p95_ms": pick(0.95), "max_ms": round(ordered[-1], 2),
            "mean_ms": round(statistics.fmean(ordered), 2)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def gunicorn(args: argparse.Namespace, port: int, log: Path) -> Iterator[subprocess.Popen]:
    source = Path(args.source).resolve() if args.source else ROOT
    cmd = [sys.executable, "-m", "gunicorn", "--worker-class", args.worker_class, "--workers", str(args.workers),
           "--bind", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "5",
           "--access-logfile", str(log.with_suffix(".access.log"))]  # as `make run` logs every request
    if args.worker_class == "gevent":
        cmd += ["--worker-connections", str(args.worker_connections)]
    else:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "REDIS_URL": args.redis_url, "STREAM_HEARTBEAT_S": str(args.heartbeat_s),
           "STREAM_TIMEOUT_S": "3600", "STATSD_HOST": "", "API_KEYS_REQUIRED": "0", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(source),
           "MODELS_DIR": os.environ.get("MODELS_DIR") or str(ROOT / ".models")}
    with open(log, "ab") as out:
        proc = subprocess.Popen([*cmd, "wsgi:app"], cwd=source, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"gunicorn did not come up; see {log}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/openapi.json")
                if connection.getresponse().status == 200:
                    break
            time.sleep(0.3)
        yield proc
    finally:
        from bench.stack import stop_process

        stop_process(proc, timeout_s=30)


def _workers(master: int) -> list[psutil.Process]:
    return psutil.Process(master).children()


def _rss_mb(master: int) -> float:
    return sum(p.memory_info().rss for p in _workers(master)) / 2**20


def _cpu_s(master: int) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in _workers(master))


def seed(store_redis: redis.Redis, jobs: int) -> list[str]:
    """The exact-cache entry and `jobs` open job records, each with a `start` event in its stream."""
    from cache.exact import ExactCache
    from engines.provider import served_models
    from jobs.store import JobStore
    from jobs.streams import publish
    from webapp.schemas import JobRequestSchema

    exact = ExactCache(store_redis, served_models())
    routing = {"intent": "factual", "tier": "small", "score": 0.9, "threshold": 0.4, "rule": "forced", "top": []}
    entry = {"response": "Paris.", "model_used": "seeded", "tier": "small", "intent": "factual", "score": 0.9,
             "routing": routing, "tokens": 2, "finish_reason": "stop", "prompt": BODY["prompt"], "max_tokens": 8,
             "cached_at": time.time()}
    exact.index.put(exact.key(JobRequestSchema().load(BODY)), entry)
    store = JobStore(store_redis, 3600)
    ids = []
    for _ in range(jobs):
        job_id = uuid.uuid4().hex
        store.create(job_id, {"prompt": "a job that stays open", "max_tokens": 8, "temperature": 0.0,
                              "tier": "small"}, status="generating", routing=routing)
        publish(store, job_id, "start", {"tier": "small", "model": "bench", "routing": routing})
        ids.append(job_id)
    return ids


def probe(port: int, count: int, timeout_s: float, budget_s: float) -> dict:
    """`count` exact-cache hits one after another (at most `budget_s` in all); latencies and errors."""
    samples, errors = [], []
    connection: Optional[http.client.HTTPConnection] = None
    stop_at = time.monotonic() + budget_s
    for _ in range(count):
        if time.monotonic() > stop_at:
            errors.append("budget spent")
            break
        started = time.perf_counter()
        try:
            connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
            connection.request("POST", "/v1/jobs", body=json.dumps(BODY), headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 200 or answer["result"]["cached"] != "exact":
                errors.append(f"{response.status}: {str(answer)[:200]}")
                continue
            samples.append((time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if connection is not None:
                connection.close()
            connection = None
    if connection is not None:
        connection.close()
    return {**_percentiles(samples[5:]), "errors": len(errors), "error_examples": sorted(set(errors))[:3]}


class Streams:
    """N SSE connections on an asyncio loop in a process of their own (so that they take no CPU or
    GIL from the requests this process times); counters in shared memory."""

    COUNTERS = ("opened", "closed_early", "failed", "bad", "heartbeats", "events", "tokens")

    def __init__(self, port: int, job_ids: list[str], count: int) -> None:
        self.port, self.job_ids, self.count = port, job_ids, count
        self._counters = multiprocessing.Array("q", len(self.COUNTERS), lock=False)
        self._examples: "multiprocessing.Queue[str]" = multiprocessing.Queue()
        self.error_examples: list[str] = []
        self._stop = multiprocessing.Event()
        self.process = multiprocessing.Process(target=self._serve, daemon=True)

    def __getattr__(self, name: str) -> int:
        if name in Streams.COUNTERS:
            return self._counters[Streams.COUNTERS.index(name)]
        raise AttributeError(name)

    def _add(self, name: str, n: int = 1) -> None:  # in the client process
        self._counters[self.COUNTERS.index(name)] += n

    def start(self) -> None:
        self.process.start()

    def refresh(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.error_examples.append(self._examples.get_nowait())

    def stop(self) -> None:
        self._stop.set()
        self.process.join(60)
        self.refresh()

    def _serve(self) -> None:  # in the client process
        self._sent_examples = 0
        asyncio.run(self._main())

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._one(self.job_ids[i % len(self.job_ids)])) for i in range(self.count)]
        while not self._stop.is_set():
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _error(self, what: str) -> None:
        self._add("failed")
        if self._sent_examples < 5:
            self._sent_examples += 1
            self._examples.put(what)

    async def _one(self, job_id: str) -> None:
        """One stream, read until this benchmark stops it; `bad` counts it if it never opened or failed."""
        writer, opened, ok = None, False, False
        try:
            for attempt in range(20):  # a full accept backlog refuses; try again a moment later
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    break
                except OSError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.2)
            writer.write(f"GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
                         .encode())
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                self._error(status.decode(errors="replace").strip())
                return
            buffer = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    self._add("closed_early")
                    self._error("the server closed the stream")
                    return
                buffer += chunk
                if b"\n\n" not in buffer:
                    continue
                complete, buffer = buffer.rsplit(b"\n\n", 1)  # whole events; the rest waits for more
                self._add("heartbeats", complete.count(b": keep-alive"))
                self._add("tokens", complete.count(b"event: token"))
                self._add("events", complete.count(b"event: "))
                if b"event: error" in complete or b"event: timeout" in complete or b"event: final" in complete:
                    self._error(complete[-200:].decode(errors="replace"))
                    return
                if not opened and b"event: start" in complete:
                    opened = True
                    self._add("opened")
        except asyncio.CancelledError:
            ok = opened  # stopped by the benchmark: fine if it was open
        except OSError as exc:
            self._error(f"{type(exc).__name__}: {exc}")
        finally:
            if not ok:
                self._add("bad")
            if writer is not None:
                writer.close()


def publish_tokens(redis_url: str, job_id: str, rate: float, stop: threading.Event) -> None:
    from jobs.store import JobStore
    from jobs.streams import publish

    store = JobStore(redis.Redis.from_url(redis_url), 3600)
    while not stop.wait(1 / rate):
        publish(store, job_id, "token", {"text": " word"})


def run(args: argparse.Namespace) -> dict:
    nofile = _raise_nofile(args.streams * 2 + 256)  # this process's sockets, and gunicorn's (inherited)
    store_redis = redis.Redis.from_url(args.redis_url)
    store_redis.flushdb()
    job_ids = seed(store_redis, args.jobs or args.streams)
    port = _free_port()
    log = ROOT / ".run" / "bench-streams.log"
    log.parent.mkdir(exist_ok=True)
    report: dict = {"command": " ".join(["python -m bench.streams", *sys.argv[1:]]), "redis": args.redis_url,
                    "worker_class": args.worker_class, "workers": args.workers, "streams": args.streams,
                    "jobs": len(job_ids), "heartbeat_s": args.heartbeat_s, "nofile": nofile, "cpus": os.cpu_count(),
                    "load_before": os.getloadavg()}
    with gunicorn(args, port, log) as proc:
        probe(port, 50, args.request_timeout_s, args.phase_budget_s)  # warm up: imports, connections, tokenizer
        report["idle"] = probe(port, args.requests, args.request_timeout_s, args.phase_budget_s)
        rss_before = _rss_mb(proc.pid)
        streams = Streams(port, job_ids, args.streams)
        started = time.monotonic()
        streams.start()
        while streams.opened + streams.failed < args.streams and time.monotonic() - started < args.open_timeout_s:
            time.sleep(0.1)
            streams.refresh()
        open_s = time.monotonic() - started
        time.sleep(args.settle_s)  # every stream past its first heartbeat wait
        stop_tokens = threading.Event()
        if args.token_rate > 0:
            threading.Thread(target=publish_tokens, args=(args.redis_url, job_ids[0], args.token_rate, stop_tokens),
                             daemon=True).start()
        calls_before, redis_cpu_before = _calls(store_redis), _redis_cpu_s(store_redis)
        cpu_before, window_started = _cpu_s(proc.pid), time.monotonic()
        time.sleep(args.measure_s)  # the streams alone: what they cost the web worker and Redis
        window_s = time.monotonic() - window_started
        calls = {name: round((count - calls_before.get(name, 0)) / window_s, 1)
                 for name, count in _calls(store_redis).items() if count > calls_before.get(name, 0)}
        report["streams_open_no_requests"] = {
            "seconds": round(window_s, 1),
            "web_cpu_percent": round((_cpu_s(proc.pid) - cpu_before) / window_s * 100, 1),
            "redis_cpu_percent": round((_redis_cpu_s(store_redis) - redis_cpu_before) / window_s * 100, 1),
            # Commands run by scripts count too; the bench's own INFO calls are in there.
            "redis_calls_per_s": dict(sorted(calls.items(), key=lambda item: -item[1])[:6]),
            "web_redis_connections": _redis_connections(proc.pid, store_redis),
        }
        rss_open = _rss_mb(proc.pid)
        report["loaded"] = probe(port, args.requests, args.request_timeout_s, args.phase_budget_s)
        stop_tokens.set()
        streams.refresh()
        still_open = streams.opened - streams.closed_early
        report["streams_result"] = {
            "opened": streams.opened, "open_s": round(open_s, 1), "still_open_after_loaded_phase": still_open,
            "failed": streams.failed, "error_examples": streams.error_examples, "heartbeats": streams.heartbeats,
            "tokens_received": streams.tokens,
        }
        report["memory"] = {"rss_before_mb": round(rss_before, 1), "rss_with_streams_mb": round(rss_open, 1),
                            "kb_per_open_stream": round((rss_open - rss_before) * 1024 / max(1, streams.opened), 1)}
        streams.stop()
        time.sleep(2)
        report["idle_after"] = probe(port, args.requests, args.request_timeout_s, args.phase_budget_s)
    report["load_after"] = os.getloadavg()
    report["loaded_p50_over_idle_p50"] = (round(report["loaded"]["p50_ms"] / report["idle"]["p50_ms"], 2)
                                          if report["loaded"].get("p50_ms") and report["idle"].get("p50_ms") else None)
    report["stream_errors"] = streams.bad  # streams that never opened, or failed
    report["errors"] = (report["idle"]["errors"] + report["loaded"]["errors"] + report["idle_after"]["errors"]
                        + streams.bad)
    return report


def _calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since Redis started (a shared Redis counts every client's)."""
    return {name[len("cmdstat_"):]: stats["calls"] for name, stats in client.info("commandstats").items()}


def _redis_cpu_s(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def _redis_connections(master: int, client: redis.Redis) -> int:
    """TCP connections from the gunicorn workers to this Redis."""
    port = client.connection_pool.connection_kwargs.get("port", 6379)
    return sum(1 for worker in _workers(master) for c in worker.net_connections("tcp")
               if c.raddr and c.raddr.port == port)


@contextlib.contextmanager
def private_redis(log: Path) -> Iterator[str]:
    """A throw-away redis-server on a free port, so that its counters count this benchmark only."""
    port = _free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--maxclients", "20000"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.time() + 20
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url, socket_connect_timeout=0.5).ping():
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"redis-server did not start; see {log}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=0, help="open jobs the streams follow (default: one per stream)")
    parser.add_argument("--requests", type=int, default=300, help="exact-cache hits per phase")
    parser.add_argument("--worker-class", default="gevent", choices=["gevent", "gthread"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16, help="gthread: threads per worker")
    parser.add_argument("--worker-connections", type=int, default=2000, help="gevent: connections per worker")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--token-rate", type=float, default=0.0, help="tokens/s published to the first job")
    parser.add_argument("--redis-url", default="",
                        help="a Redis DB to use (flushed); default: a private redis-server on a free port")
    parser.add_argument("--request-timeout-s", type=float, default=10.0)
    parser.add_argument("--phase-budget-s", type=float, default=120.0, help="most seconds one phase may take")
    parser.add_argument("--open-timeout-s", type=float, default=60.0)
    parser.add_argument("--settle-s", type=float, default=6.0, help="wait after the streams opened")
    parser.add_argument("--measure-s", type=float, default=10.0,
                        help="streams open and no requests: web CPU and Redis commands measured")
    parser.add_argument("--source", default="", help="serve the app from this checkout (before/after comparisons)")
    args = parser.parse_args()
    if args.redis_url:
        print(json.dumps(run(args), indent=2))
        return
    log = ROOT / ".run" / "bench-streams-redis.log"
    log.parent.mkdir(exist_ok=True)
    with private_redis(log) as url:
        args.redis_url = url
        print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
