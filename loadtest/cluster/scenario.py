"""The cluster run's steps: bring the hosts up, load them, lose a host, add one, fail Redis over, drain a
host, then count what every accepted job became."""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import redis
import requests

from jobs import redis_client
from jobs.queues import queue_depths, tier_queue
from loadtest.cluster.hosts import REDIS_PORT, SENTINEL_MASTER, WEB_PORT, Cluster, Host, wait_until
from loadtest.cluster.load import Clients, Job, Observer, ended
from loadtest.cluster.timeline import plot_timeline

TARGETS = {"lost": 0, "duplicated_results": 0, "failover_lost": 0, "drain_cut_streams": 0}
HOST_LOSS_TARGET_S = 30.0
SENTINEL_DOWN_AFTER_MS = 2000
DRAIN_BURST_TOKENS = 64
END_WAIT_S = 180.0  # after the last event: a job that has not ended by then counts as lost
PRIORITY_STEPS = {"priority_steps": list(range(10))}  # celeryconfig.py's broker_transport_options


def log(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


class Scenario:
    """One run of the scenario on `cluster` (whose client host this process already is)."""

    def __init__(self, cluster: Cluster, plan, models_from: Optional[Path], reports: Path) -> None:
        self.cluster, self.plan, self.models_from, self.reports = cluster, plan, models_from, reports
        self.events: list[tuple[float, str]] = []
        self.figures: dict = {}

    # --- Bringing the hosts up ----------------------------------------------------------------------------------

    def start_redis(self) -> None:
        cluster = self.cluster
        master, replica = cluster.add_host("redis-1"), cluster.add_host("redis-2")
        cluster.start_redis(master, first_master=master)
        cluster.start_redis(replica, first_master=master)
        for number in (1, 2, 3):
            cluster.start_sentinel(cluster.add_host(f"sentinel-{number}"), master.address, SENTINEL_DOWN_AFTER_MS)
        wait_until(self._sentinels_ready, 60, "sentinels see the replica and each other")
        self.redis = redis_client(self.platform_env()["REDIS_URL"], 2.0, SENTINEL_MASTER)

    def _sentinels_ready(self) -> bool:
        for address in self.cluster.sentinels:
            sentinel = redis.Redis(address, 26379, socket_timeout=1)
            if len(sentinel.sentinel_slaves(SENTINEL_MASTER)) != 1 or len(sentinel.sentinel_sentinels(SENTINEL_MASTER)) != 2:
                return False
        return True

    def platform_env(self) -> dict[str, str]:
        return self.cluster.platform_env(next(iter(self.cluster.hosts.values())))

    def start_platform_host(self, name: str, role: str) -> Host:
        host = self.cluster.add_host(name)
        steps = ["routing.prepare"] if role == "routing" else ["engines.prepare"]
        started = time.time()
        self.cluster.prepare(host, steps, self.models_from, timeout=900)
        log(f"{name}: models ready in {time.time() - started:.1f}s")
        self.cluster.start_role(host, role)
        return host

    def start_platform(self) -> None:
        for name, role in (("routing", "routing"), ("small-1", "small"), ("small-2", "small"),
                           ("large-1", "large"), ("web", "web")):
            self.start_platform_host(name, role)
        self.base_url = f"http://{self.cluster.hosts['web'].address}:{WEB_PORT}"
        wait_until(lambda: self._serving({"small-queue": {"small-1", "small-2"}, "large-queue": {"large-1"}}),
                   600, "/ready with both small hosts and the large host")

    def _serving(self, wanted: dict[str, set[str]]) -> bool:
        body = requests.get(f"{self.base_url}/ready", timeout=3).json()
        return body["status"] == "ready" and all(hosts <= set(body["hosts"].get(queue, {}))
                                                 for queue, hosts in wanted.items())

    # --- The run ------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        self.start_redis()
        self.start_platform()
        self.clients = Clients(self.base_url, self.plan.clients)
        self.observer = Observer(self.redis, self.clients)
        self.start = time.time()
        self.observer.start()
        self.clients.start()
        log(f"load: {self.plan.clients} clients on {self.base_url}")
        try:
            time.sleep(self.plan.load_before_s)
            self.lose_small_host("small-1")
            self.add_small_host("small-3")
            time.sleep(self.plan.between_s)
            self.fail_redis_over("redis-1")
            time.sleep(self.plan.between_s)
            self.drain_large_host("large-1")
            self.wait_for_every_job(END_WAIT_S)
        finally:
            self.clients.join(timeout=10)
            self.observer.close()
        return self.report()

    def mark(self, label: str) -> float:
        moment = time.time()
        self.events.append((moment, label))
        log(f"{moment - self.start:6.1f}s {label}")
        return moment

    def lose_host(self, name: str) -> None:
        """As a host that dies: its link goes down first (no FIN or RST reaches anyone), then every process."""
        self.cluster.network.set_link(name, False)
        self.cluster.hosts[name].kill_all()

    def lose_small_host(self, name: str) -> None:
        self._wait_for_running(name)
        killed = self.mark(f"{name} lost")
        self.lose_host(name)
        # Read once the link is down: a job that ended on the host just before (its final write landed)
        # has nothing to move, and the host can no longer end any other.
        victims = self.observer.running_on(name)
        moved = self.observer.wait_moved(victims, name, timeout=180)
        self.figures["host_loss_recovery_s"] = round(time.time() - killed, 1)
        self.figures["host_loss_jobs"] = len(victims)
        log(f"{len(victims)} jobs of {name} running elsewhere {self.figures['host_loss_recovery_s']}s after the loss"
            f" (waited {moved:.1f}s)")

    def _wait_for_running(self, name: str, wanted: int = 2, timeout: float = 60) -> list[str]:
        """The jobs running on `name` once there are `wanted` (or at least one after `timeout`)."""
        running: list[str] = []

        def enough(least: int) -> bool:
            running[:] = self.observer.running_on(name)
            return len(running) >= least

        try:
            wait_until(lambda: enough(wanted), timeout, f"{wanted} jobs running on {name}")
        except TimeoutError:
            wait_until(lambda: enough(1), 120, f"a job running on {name}")
        return running

    def add_small_host(self, name: str) -> None:
        added = self.mark(f"{name} added")
        self.start_platform_host(name, "small")
        wait_until(lambda: self.observer.running_per_host().get(name), 300, f"a job running on {name}")
        self.figures["new_host_first_job_s"] = round(time.time() - added, 1)

    def fail_redis_over(self, name: str) -> None:
        failed = self.mark("Redis master lost")
        self.lose_host(name)
        probe = redis_client(self.platform_env()["REDIS_URL"], 0.5, SENTINEL_MASTER)
        wait_until(lambda: probe.set("cluster:probe", failed), 120, "a write to the promoted replica", 0.1)
        self.figures["failover_s"] = round(time.time() - failed, 1)
        self.failed_at = failed
        # The old master's host comes back empty (nothing on disk), started as deploy/redis-node.sh starts a
        # node: a replica of the master the sentinels name, never a master that takes writes until the
        # sentinels demote it. Submissions, which wait for a replica (REDIS_MIN_REPLICAS=1), are accepted
        # again once it has synced.
        host = self.cluster.hosts[name]
        self.cluster.network.set_link(name, True)
        self.cluster.start_redis(host, first_master=host)
        wait_until(lambda: self._role(host), 60, f"{name} to answer")
        self.figures["old_master_restarted_as"] = self._role(host)  # "slave" at once: it never took writes
        wait_until(lambda: probe.info("replication")["connected_slaves"] >= 1, 120, "the old master back as a replica")
        self.mark(f"{name} back as replica")

    @staticmethod
    def _role(host: Host) -> Optional[str]:
        try:
            return redis.Redis(host.address, REDIS_PORT, socket_timeout=1).role()[0].decode()
        except redis.RedisError:
            return None

    def drain_large_host(self, name: str) -> None:
        """Stop the load, then SIGTERM the large worker while it streams jobs (its queue empty, so that no
        job is left waiting for a large host that is gone)."""
        self.clients.stop.set()
        burst = [self.clients.submit({"prompt": f"Explain in detail how a hash map grows (drain {n})",
                                      "tier": "large", "max_tokens": DRAIN_BURST_TOKENS, "temperature": 0,
                                      "cache": False}, requests.Session(), after_stop=True) for n in range(4)]
        followers = [threading.Thread(target=self.clients.follow, args=(job,), daemon=True) for job in burst]
        for thread in followers:
            thread.start()
        depth = lambda: queue_depths(self.redis, PRIORITY_STEPS, [tier_queue("large")])[tier_queue("large")]
        wait_until(lambda: depth() == 0 and set(self.observer.running_on(name)) >= {job.id for job in burst
                                                                                     if not ended(job.status)},
                   180, f"{name} streaming the burst, its queue empty")
        draining = self.observer.running_on(name)
        self.mark(f"{name} drained")
        host = self.cluster.hosts[name]
        host.signal("large", signal.SIGTERM)
        wait_until(lambda: host.processes["large"].poll() is not None, 300, f"{name}'s worker to exit")
        self.figures["drain_s"] = round(time.time() - self.events[-1][0], 1)
        self.draining = draining
        for thread in followers:
            thread.join(300)

    # --- The figures --------------------------------------------------------------------------------------------

    def wait_for_every_job(self, timeout: float) -> None:
        """Until every accepted job has ended, or `timeout`: what has not ended by then is lost."""
        try:
            wait_until(lambda: all(ended(self._status(job)) for job in list(self.clients.jobs)), timeout,
                       "every accepted job to end", interval=1)
        except TimeoutError as exc:
            log(str(exc))

    def report(self) -> dict:
        jobs = list(self.clients.jobs)
        records = self.observer.records([job.id for job in jobs])
        statuses = {job.id: records[job.id][0] or None for job in jobs}
        self._write_jobs(jobs, records)
        lost = [job for job in jobs if not ended(statuses[job.id])]
        duplicated = [job for job in jobs if self.observer.final_events(job.id) > 1]
        by_id = {job.id: job for job in jobs}
        near_failover = [job for job in jobs if self.failed_at - 5 <= job.accepted_at <= self.failed_at
                         + self.figures["failover_s"]]
        last_second = [job for job in jobs if self.failed_at - 1 <= job.accepted_at <= self.failed_at]
        cut = [job_id for job_id in self.draining if by_id.get(job_id) and _cut(by_id[job_id])]
        figures = {
            "hosts": len(self.cluster.hosts) - 1,  # the client host is not the platform's
            "jobs": len(jobs),
            "lost": len(lost),
            "duplicated_results": len(duplicated),
            "host_loss_recovery_s": self.figures["host_loss_recovery_s"],
            "failover_s": self.figures["failover_s"],
            "failover_lost": sum(1 for job in near_failover if not ended(statuses[job.id])),
            "drain_cut_streams": len(cut),
            "failed": sum(1 for job in jobs if statuses[job.id] in ("failed", "cancelled")),
            "mixed_streams": sum(1 for job in jobs if job.mixed),
            "stream_resumes": sum(job.breaks for job in jobs),
            "refused_submissions": len(self.clients.refusals),
            "host_loss_jobs": self.figures["host_loss_jobs"],
            "new_host_first_job_s": self.figures["new_host_first_job_s"],
            "accepted_last_second_before_failover": len(last_second),
            "last_second_succeeded": sum(1 for job in last_second if statuses[job.id] == "succeeded"),
            "drained_streams": len(self.draining),
            "drain_s": self.figures["drain_s"],
            "old_master_restarted_as": self.figures["old_master_restarted_as"],
        }
        figures["run"] = self.cluster.network.prefix  # every namespace of the run is named after it
        figures["targets_met"] = (all(figures[key] == value for key, value in TARGETS.items())
                                  and figures["host_loss_recovery_s"] <= HOST_LOSS_TARGET_S)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        figures["timeline"] = str(plot_timeline(self.observer.samples, self.events, self.start,
                                                self.reports / f"cluster-{stamp}.png",
                                                _title(figures)).relative_to(self.reports.parent))
        return figures

    def _write_jobs(self, jobs: list[Job], records: dict) -> None:
        """Every job and refusal of the run, for a closer look (`jobs.jsonl` in the run's directory)."""
        with open(self.cluster.directory / "jobs.jsonl", "w") as out:
            for job in jobs:
                job.worker = records[job.id][1]
                out.write(json.dumps({**job.as_dict(), "t": round(job.accepted_at - self.start, 2)}) + "\n")
            for moment, status in self.clients.refusals:
                out.write(json.dumps({"refused": status, "t": round(moment - self.start, 2)}) + "\n")
            for moment, label in self.events:
                out.write(json.dumps({"event": label, "t": round(moment - self.start, 2)}) + "\n")

    def _status(self, job: Job) -> Optional[str]:
        if ended(job.status):
            return job.status
        return self.observer.records([job.id])[job.id][0] or None


def _cut(job: Job) -> bool:
    return job.status != "succeeded" or job.breaks > 0 or job.mixed


def _title(figures: dict) -> str:
    return (f"make cluster: {figures['jobs']} jobs, lost {figures['lost']}, host loss recovered in "
            f"{figures['host_loss_recovery_s']}s, failover {figures['failover_s']}s, "
            f"drain cut {figures['drain_cut_streams']} of {figures['drained_streams']} streams")
