"""How soon a job held by a worker that is lost runs again on another worker, per broker.

`python -m bench.broker_recovery [--runs N] [--scenarios a,b] [--settle S] [--json]`
(about 5 minutes a run of all six scenarios; results as JSON lines on stderr as they come).

Each run starts two real Celery workers (threads pool, concurrency 1, prefetch 1, acks_late,
reject_on_worker_lost: the delivery settings of celeryconfig.py) on a queue of its own
(`broker-recovery-<uuid>`), sends one long job, waits until a worker (A) runs it, then loses A:
SIGKILL (the kernel closes A's sockets) or SIGSTOP (a host whose link went down: no FIN or RST, so
only AMQP heartbeats reveal it). It reports the seconds from the loss until the job starts on the
other worker (B), or "> cap". The task records each start (worker, time) in Redis DB 14.
`--settle S` lets A run the job S seconds before it is lost.

The figures move with the phase of the loss: RabbitMQ closes a silent connection 2 to 3 heartbeat
intervals after the last data it got from it (its heartbeat checks tick from the connection's start),
and kombu's Redis transport hands a message back at the first restore sweep once it has been unacked
for the visibility timeout, counted from its delivery, not from the loss.

This is a bare Celery app, not the platform: the platform's reaper (tasks/reaper.py) is not in it,
so the Redis scenario shows what the visibility timeout alone does. Everything a run makes (the
queue and its exchange on RabbitMQ, the keys under its prefix in Redis DB 14) is deleted after it.
RabbitMQ at RABBIT_URL and Redis at REDIS_URL must be running.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

if TYPE_CHECKING:
    import redis
    from celery import Celery
    from kombu import Queue

T = TypeVar("T")

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/14"  # broker of the Redis scenario and the record of starts
JOB_S = 600  # the job outlasts every measurement, so it never ends on its own
TASK = "broker_recovery.hold"


@dataclass(frozen=True)
class Scenario:
    name: str
    broker: str  # "rabbitmq" or "redis"
    loss: str  # "kill" (SIGKILL) or "stop" (SIGSTOP)
    settings: str  # for the report
    heartbeat_s: Optional[float] = None  # broker_heartbeat; None: Celery's default (120 s)
    quorum: bool = False
    visibility_timeout_s: Optional[int] = None
    cap_s: float = 120.0


SCENARIOS = (
    Scenario("rabbit-kill", "rabbitmq", "kill", "classic queue, x-max-priority 9", cap_s=60),
    Scenario("rabbit-stop-hb10", "rabbitmq", "stop", "classic queue, broker_heartbeat 10", 10.0, cap_s=90),
    Scenario("rabbit-stop-hbdefault", "rabbitmq", "stop", "classic queue, Celery default broker_heartbeat",
             cap_s=400),
    Scenario("quorum-kill", "rabbitmq", "kill", "quorum queue", quorum=True, cap_s=60),
    Scenario("quorum-stop-hb10", "rabbitmq", "stop", "quorum queue, broker_heartbeat 10", 10.0, quorum=True,
             cap_s=90),
    Scenario("redis-kill-vt60", "redis", "kill", "visibility_timeout 60, restore sweep 10 s, no reaper",
             visibility_timeout_s=60, cap_s=200),
)


@dataclass
class Result:
    scenario: str
    run: int
    seconds: Optional[float]  # loss -> started on B; None: not within cap_s
    since_first_start_s: Optional[float]  # A's start -> B's start
    heartbeat_s: Optional[float]  # as negotiated by worker A's connection (RabbitMQ)
    redelivered: Optional[bool]  # the broker's flag on B's delivery
    settle_s: float = 0.0  # how long A ran the job before it was lost


def worker_config(scenario: Scenario, tag: str) -> dict:
    """What a worker (and the sender) of one run is built from; passed to workers as JSON."""
    return {"broker": scenario.broker, "queue": f"broker-recovery-{tag}", "prefix": f"broker-recovery-{tag}:",
            "heartbeat_s": scenario.heartbeat_s, "quorum": scenario.quorum,
            "visibility_timeout_s": scenario.visibility_timeout_s}


def make_app(config: dict) -> "Celery":
    """A bare Celery app with celeryconfig.py's delivery settings and one task that records its start."""
    import redis
    from celery import Celery
    from celery.worker.consumer import Consumer

    rabbit = config["broker"] == "rabbitmq"
    app = Celery("broker_recovery", broker=RABBIT_URL if rabbit else REDIS_URL, set_as_current=False)
    app.conf.update(
        task_queues=[_queue(config)], task_default_queue=config["queue"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_ignore_result=True, task_serializer="json", accept_content=["json"],
        # Nothing but the run's queue on the broker: no pidbox, event or delayed-delivery queues.
        worker_enable_remote_control=False, worker_send_task_events=False,
        worker_consumer=_consumer_without_delayed_delivery(Consumer),
        broker_connection_retry_on_startup=True,
    )
    if config["heartbeat_s"] is not None:
        app.conf.broker_heartbeat = config["heartbeat_s"]
    if not rabbit:  # as celeryconfig.py, but this visibility timeout, and every key under the run's prefix
        app.conf.broker_transport_options = {
            "visibility_timeout": config["visibility_timeout_s"], "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1, "priority_steps": list(range(10)), "global_keyprefix": config["prefix"]}
    _add_task_and_ready_record(app, config, redis.Redis.from_url(REDIS_URL))
    return app


def _queue(config: dict) -> "Queue":
    """The run's queue: quorum, or classic with priorities 0-9 as the platform would need on RabbitMQ."""
    from kombu import Exchange, Queue

    name = config["queue"]
    if config["broker"] != "rabbitmq":
        arguments = None
    else:  # RabbitMQ 3.x refuses x-max-priority on a quorum queue
        arguments = {"x-queue-type": "quorum"} if config["quorum"] else {"x-max-priority": 9}
    return Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments=arguments)


def _add_task_and_ready_record(app: "Celery", config: dict, records: "redis.Redis") -> None:
    """The task (records its start, then sleeps) and a record of each worker's readiness."""
    from celery import signals

    @app.task(name=TASK, bind=True)
    def hold(self, key: str, seconds: float) -> None:
        delivery = self.request.delivery_info or {}
        records.rpush(key, json.dumps({"worker": self.request.hostname, "t": time.time(),
                                       "redelivered": delivery.get("redelivered")}))
        time.sleep(seconds)

    @signals.worker_ready.connect(weak=False)
    def ready(sender, **_) -> None:  # the negotiated AMQP heartbeat; None on Redis
        heartbeat = getattr(sender.connection.connection, "heartbeat", None) if config["broker"] == "rabbitmq" else None
        records.rpush(config["prefix"] + "ready", json.dumps({"worker": sender.hostname, "heartbeat": heartbeat}))


def _consumer_without_delayed_delivery(consumer: type) -> type:
    """Celery's consumer less DelayedDelivery, which declares 28 quorum queues once it sees a quorum queue."""
    steps = [s for s in consumer.Blueprint.default_steps if not s.endswith(":DelayedDelivery")]
    blueprint = type("Blueprint", (consumer.Blueprint,), {"default_steps": steps})
    return type("BrokerRecoveryConsumer", (consumer,), {"Blueprint": blueprint})


def run_worker(config: dict, hostname: str) -> None:
    """The `celery worker` command (threads pool, one slot) on the run's queue; runs until killed."""
    make_app(config).worker_main(["worker", "-P", "threads", "-c", "1", "-n", hostname, "-Q", config["queue"],
                                  "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"])


def start_worker(config: dict, hostname: str, logs: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.broker_recovery", "--worker", json.dumps(config), "--hostname", hostname]
    with open(logs / f"{hostname.split('@')[0]}.log", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parent.parent)


def wait_for(fetch: Callable[[], T], timeout_s: float, poll_s: float = 0.1) -> Optional[T]:
    """fetch()'s first truthy answer within timeout_s, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = fetch()
        if found:
            return found
        time.sleep(poll_s)
    return None


def _at_least(entries: list, count: int) -> Optional[list]:
    return entries if len(entries) >= count else None


def measure(scenario: Scenario, run: int, logs: Path, settle_s: float = 0.0) -> Result:
    """One run of one scenario: two workers, one job, lose the worker that runs it, time the hand-over."""
    import redis

    config = worker_config(scenario, uuid.uuid4().hex[:12])
    records = redis.Redis.from_url(REDIS_URL)
    starts_key, ready_key = config["prefix"] + "starts", config["prefix"] + "ready"
    workers = {name: start_worker(config, f"{name}@broker-recovery", logs) for name in ("w1", "w2")}
    try:
        ready = wait_for(lambda: _at_least(records.lrange(ready_key, 0, -1), len(workers)), 90)
        if not ready:
            raise RuntimeError(f"{scenario.name}: workers not ready in 90 s\n{log_tails(logs)}")
        time.sleep(1.0)  # from ready to consuming
        send_job(config, starts_key)
        first = wait_for(lambda: records.lindex(starts_key, 0), 30)
        if not first:
            raise RuntimeError(f"{scenario.name}: the job did not start in 30 s\n{log_tails(logs)}")
        first = json.loads(first)
        holder = workers[first["worker"].split("@")[0]]
        time.sleep(settle_s)
        lost_at = time.time()
        os.kill(holder.pid, signal.SIGKILL if scenario.loss == "kill" else signal.SIGSTOP)
        second = wait_for(lambda: records.lindex(starts_key, 1), scenario.cap_s, poll_s=0.2)
        second = json.loads(second) if second else None
        heartbeat = next((json.loads(r)["heartbeat"] for r in ready
                          if json.loads(r)["worker"] == first["worker"]), None)
        return Result(scenario.name, run, round(second["t"] - lost_at, 2) if second else None,
                      round(second["t"] - first["t"], 2) if second else None, heartbeat,
                      second["redelivered"] if second else None, settle_s)
    finally:
        for proc in workers.values():
            stop_worker(proc)
        clean_up(config)


def log_tails(logs: Path, lines: int = 15) -> str:
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:])
                     for log in sorted(logs.glob("*.log")))


def send_job(config: dict, starts_key: str) -> None:
    app = make_app(config)
    try:
        app.send_task(TASK, args=[starts_key, JOB_S], queue=config["queue"], priority=5)
    finally:
        app.close()


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGCONT (for a stopped one), then SIGKILL, then reap."""
    if proc.poll() is None:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
    proc.wait(timeout=30)


def clean_up(config: dict) -> None:
    """Delete the run's queue and exchange (RabbitMQ) and its keys in Redis DB 14."""
    import redis
    from kombu import Connection

    if config["broker"] == "rabbitmq":
        with Connection(RABBIT_URL) as conn:
            channel = conn.channel()
            channel.queue_delete(config["queue"])
            channel.exchange_delete(config["queue"])
    records = redis.Redis.from_url(REDIS_URL)
    keys = list(records.scan_iter(match=config["prefix"] + "*", count=500))
    if keys:
        records.delete(*keys)


def summarize(results: list[Result], scenarios: list[Scenario]) -> list[dict]:
    rows = []
    for s in scenarios:
        runs = [r for r in results if r.scenario == s.name]
        got = [r.seconds for r in runs if r.seconds is not None]
        rows.append({"scenario": s.name, "broker": s.broker, "loss": s.loss, "settings": s.settings,
                     "runs": len(runs), "seconds": [r.seconds for r in runs], "cap_s": s.cap_s,
                     "min_s": min(got) if got else None, "median_s": statistics.median(got) if got else None,
                     "max_s": max(got) if got else None, "timed_out": len(runs) - len(got),
                     "since_first_start_s": [r.since_first_start_s for r in runs],
                     "heartbeat_s": sorted({r.heartbeat_s for r in runs if r.heartbeat_s is not None})})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'scenario':24} {'loss':5} {'runs':>4}  {'loss -> running on B (s)':34} settings")
    for row in rows:
        figures = ", ".join("> %g" % row["cap_s"] if s is None else f"{s:.2f}" for s in row["seconds"])
        hb = f" (negotiated heartbeat {row['heartbeat_s']} s)" if row["heartbeat_s"] else ""
        print(f"{row['scenario']:24} {row['loss']:5} {row['runs']:>4}  {figures:34} {row['settings']}{hb}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs per scenario (default 2)")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds A runs the job before it is lost (default 0: at once)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one worker with this config
    parser.add_argument("--hostname", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker), args.hostname)
        return 0
    by_name = {s.name: s for s in SCENARIOS}
    scenarios = [by_name[name] for name in args.scenarios.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="broker-recovery-") as logs:
        for run in range(1, args.runs + 1):  # scenarios take turns, so a busy machine slows them alike
            for scenario in scenarios:
                result = measure(scenario, run, Path(logs), args.settle)
                print(json.dumps(asdict(result)), file=sys.stderr, flush=True)
                results.append(result)
    rows = summarize(results, scenarios)
    if args.json:
        print(json.dumps({"date": time.strftime("%Y-%m-%d"), "settle_s": args.settle,
                          "results": [asdict(r) for r in results], "summary": rows}, indent=2))
    else:
        print(f"A lost {args.settle:g} s after it started the job")
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
