"""The cluster's clients and its observer.

Clients submit jobs through the web host and follow each one's stream to its end, as a careful user
does: a submission refused with 503 (or cut off) is retried, and a stream that breaks is resumed after
its last event (Last-Event-ID, as EventSource does). Each followed stream is checked: it ends with a
`final` event, and the text after its last `start` is the final answer (never mixed).

The observer reads the job records: on which host each running job is, and when a job that was on a
lost host is running elsewhere.
"""
from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import redis
import requests

from jobs.status import is_final
from jobs.store import job_key, stream_key
from loadtest.sse import sse_entries
from loadtest.traffic import labelled_prompts

STREAM_DEADLINE_S = 300.0


@dataclass
class Job:
    """One accepted job and what its client saw of it."""

    id: str
    tier: str  # what the client asked for: auto, small or large
    accepted_at: float
    ended_at: Optional[float] = None
    status: Optional[str] = None
    starts: int = 0
    breaks: int = 0  # stream connections that ended before the final event
    mixed: bool = False  # the final answer is not the text streamed after the last start

    followed_at: Optional[float] = None  # when its stream first connected
    worker: str = ""  # the worker that answered (from the record, at the end)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Clients:
    """`count` client threads submitting jobs to `base_url` and following their streams until stopped."""

    base_url: str
    count: int
    max_tokens: int = 24
    large_share: float = 0.15
    jobs: list[Job] = field(default_factory=list)
    refusals: list[tuple[float, int]] = field(default_factory=list)  # (when, HTTP status or 0: cut off), retried
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        prompts = [row["prompt"] for row in labelled_prompts()]
        counter = itertools.count()
        for number in range(self.count):
            thread = threading.Thread(target=self._client, args=(random.Random(number), prompts, counter),
                                      name=f"client-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def open_jobs(self) -> list[str]:
        """The accepted jobs whose end this client has not seen yet."""
        with self._lock:
            return [job.id for job in self.jobs if job.status is None]

    def submit_and_follow(self, body: dict, session: Optional[requests.Session] = None) -> Optional[Job]:
        """Submit one job (retrying refusals until stopped) and follow it to its end."""
        job = self.submit(body, session or requests.Session())
        if job is not None:
            self.follow(job)
        return job

    def _client(self, rng: random.Random, prompts: list[str], counter) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            tier = "large" if rng.random() < self.large_share else "auto"
            body = {"prompt": f"{rng.choice(prompts)} (request {next(counter)})", "tier": tier,
                    "max_tokens": self.max_tokens, "temperature": 0, "cache": False}
            self.submit_and_follow(body, session)

    def submit(self, body: dict, session: requests.Session, after_stop: bool = False) -> Optional[Job]:
        """Submit one job, retrying refusals (503, 429, cut off) until stopped, or for good with `after_stop`."""
        while after_stop or not self.stop.is_set():
            try:
                response = session.post(f"{self.base_url}/v1/jobs", json=body, timeout=10)
            except requests.RequestException:
                response = None
            if response is not None and response.status_code in (200, 202):
                job = Job(response.json()["id"], body["tier"], time.time())
                with self._lock:
                    self.jobs.append(job)
                return job
            if response is not None and response.status_code not in (429, 503):
                raise RuntimeError(f"submission refused: {response.status_code} {response.text[:200]}")
            with self._lock:
                self.refusals.append((time.time(), response.status_code if response is not None else 0))
            time.sleep(0.3)
        return None

    def follow(self, job: Job) -> None:
        """Follow the job's stream to its final event, resuming after the last event when it breaks."""
        last_id, text, deadline = "", "", time.time() + STREAM_DEADLINE_S
        while job.status is None and time.time() < deadline:
            try:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                with requests.get(f"{self.base_url}/v1/jobs/{job.id}/stream", headers=headers, stream=True,
                                  timeout=(5, 30)) as response:
                    job.followed_at = job.followed_at or time.time()
                    for event, data, entry_id in sse_entries(response.iter_lines(decode_unicode=True)):
                        last_id = entry_id or last_id
                        text = self._on_event(job, event, data, text)
                        if job.status is not None or event == "error":
                            break
            except requests.RequestException:
                pass
            if job.status is None:
                job.breaks += 1
                time.sleep(0.5)

    @staticmethod
    def _on_event(job: Job, event: str, data: str, text: str) -> str:
        payload = json.loads(data) if data.startswith("{") else {}
        if event == "start":
            job.starts += 1
            return ""
        if event == "token":
            return text + payload.get("text", "")
        if event == "final":
            job.status, job.ended_at = payload.get("status"), time.time()
            response = (payload.get("result") or payload).get("response")
            job.mixed = response is not None and job.starts > 0 and response != text
        return text


class Observer:
    """Samples, every `interval_s`, how many jobs run on each host, from the job records."""

    def __init__(self, client: redis.Redis, clients: Clients, interval_s: float = 0.5) -> None:
        self.client, self.clients, self.interval_s = client, clients, interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self.samples.append((time.time(), self.running_per_host()))
            except redis.RedisError:
                pass  # Redis fails over: no sample

    def running_per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for status, worker in self.records(self.clients.open_jobs()).values():
            if status == "generating" and worker:
                counts[host_of(worker)] = counts.get(host_of(worker), 0) + 1
        return counts

    def running_on(self, host: str) -> list[str]:
        return [job_id for job_id, (status, worker) in self.records(self.clients.open_jobs()).items()
                if status == "generating" and worker and host_of(worker) == host]

    def records(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """(status, worker) of each job, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(job_key(job_id), "status", "worker")
        rows = pipe.execute() if job_ids else []
        return {job_id: tuple((value or b"").decode().strip('"') for value in row)
                for job_id, row in zip(job_ids, rows)}

    def wait_moved(self, job_ids: list[str], lost_host: str, timeout: float) -> float:
        """Seconds until every job in `job_ids` runs (or ran) on a host other than `lost_host`."""
        start, waiting = time.time(), set(job_ids)
        while waiting and time.time() - start < timeout:
            try:
                for job_id, (status, worker) in self.records(sorted(waiting)).items():
                    if worker and host_of(worker) != lost_host and status in ("generating", "succeeded"):
                        waiting.discard(job_id)
            except redis.RedisError:
                pass
            time.sleep(0.2)
        if waiting:
            records = {job_id: self.client.hgetall(job_key(job_id)) for job_id in sorted(waiting)}
            raise TimeoutError(f"jobs still not running elsewhere after {timeout:g}s: {records}")
        return time.time() - start

    def final_events(self, job_id: str) -> int:
        """How many `final` entries the job's stream holds (one result per job: exactly one)."""
        return sum(1 for _, fields in self.client.xrange(stream_key(job_id)) if fields.get(b"event") == b"final")


def host_of(worker: str) -> str:
    return worker.rpartition("@")[2]


def ended(status: Optional[str]) -> bool:
    return status is not None and is_final(status)
