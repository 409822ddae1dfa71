"""Token streams: one Redis Stream per job, written by the generation task, read by any web process.

Entries are `{"event": <name>, "data": <json>}`: `start` (tier, model, routing) when a
generation attempt begins, `token` (text) per chunk, and `final` (status and the result
fields), written with the job's final status in one step (`JobStore.move`). A stream expires
with its job record. This module writes and reads entries; `jobs.follow` follows a job live.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

from jobs.status import is_final
from jobs.store import JobStore, job_key, stream_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream; `id` is the Redis entry id (None for made-up events)."""

    event: str  # start | token | final | timeout | heartbeat
    data: dict
    id: Optional[str] = None


def publish(store: JobStore, job_id: str, event: str, data: dict, fence: Optional[int] = None) -> None:
    """Append one event to the job's stream and keep the stream's expiry in step with the job; refused
    (silently) once a delivery of the job later than `fence` has begun (JobStore.start_delivery)."""
    _append(store, [(job_id, fence, event, json.dumps(data))])


def _append(store: JobStore, entries: list[tuple[str, Optional[int], str, str]],
            expected: Optional[dict[str, int]] = None) -> set[str]:
    """Append (job id, fence, event, JSON data) entries in one round trip, a script call per job and
    delivery, in order; each stream expires with its job. With `expected` (job id -> events its attempt
    has in the stream), a job whose count differs is not written: the jobs refused so."""
    groups: dict[tuple[str, Optional[int]], list[str]] = {}
    for job_id, fence, event, data in entries:
        groups.setdefault((job_id, fence), []).extend((event, data))
    pipe = store.redis.pipeline(transaction=False)
    for (job_id, fence), events in groups.items():
        count = "" if expected is None or job_id not in expected else expected[job_id]
        store.fenced_append(keys=[job_key(job_id), stream_key(job_id)],
                            args=[store.ttl_s, "" if fence is None else fence, count, *events], client=pipe)
    return {job_id for (job_id, _), applied in zip(groups, pipe.execute()) if int(applied) == -1}


class TokenBatches:
    """One per worker process: the stream events of every job it runs, written together every `interval_s`
    in one Redis round trip, instead of one per token per job.

    A job's `start` and first token are written at once (time to first token is not delayed), later
    ones wait at most `interval_s`. `flush()` writes what is pending now: a task calls it before its
    job's final event, so a stream's tokens always come before its end. Batches are written one at a
    time, in the order their events came, so a job's tokens keep their order. `interval_s` 0 writes
    each at once.

    Each write says how many events the job's attempt has in the stream so far. A write that failed
    may have landed after all, and one that succeeded is lost with a Redis master that dies before its
    replica has it (replication is asynchronous); either way the counts disagree, the write is
    refused, and the job's attempt is written again from its `start` (readers drop what they have at a
    `start`): no stream keeps a gap or a token twice. `finish` forgets a job.
    """

    REWRITES = 3  # rounds of writing attempts again within one flush

    def __init__(self, store: JobStore, interval_s: float) -> None:
        self.store, self.interval_s = store, interval_s
        self._pending: list[tuple[str, Optional[int], str, str]] = []  # (job id, fence, event, data as JSON)
        self._attempts: dict[str, list[tuple[str, Optional[int], str, str]]] = {}  # each job's events since start
        self._written: dict[str, int] = {}  # each job's events known to be in its stream
        self._rewrite: set[str] = set()  # jobs whose attempt is written again from its start
        self._lock = threading.Lock()  # guards the four above
        self._writing = threading.Lock()  # one batch at a time: order across batches
        self._queued = threading.Event()  # set by publish: an idle process's flusher sleeps until then
        self._flusher: Optional[threading.Thread] = None

    def publish(self, job_id: str, event: str, data: dict, at_once: bool = False, fence: Optional[int] = None) -> None:
        entry = (job_id, fence, event, json.dumps(data))
        with self._lock:
            if event == "start":
                self._attempts[job_id] = []
            self._attempts.setdefault(job_id, []).append(entry)
            self._pending.append(entry)
            if self._flusher is None and self.interval_s > 0:
                self._flusher = threading.Thread(target=self._run, name="token-batches", daemon=True)
                self._flusher.start()
        self._queued.set()
        if at_once or self.interval_s <= 0:
            self.flush()

    def flush(self) -> None:
        """Write every pending event now, and again from its start any attempt whose stream disagrees
        (raises what Redis raises)."""
        with self._writing:
            for _ in range(self.REWRITES):
                if not self._write_round():
                    return
            log.warning("streams of jobs %s still disagree after %d rewrites", sorted(self._rewrite), self.REWRITES)

    def _write_round(self) -> bool:
        """One batch; True when some job's attempt must be written again."""
        with self._lock:
            rewrite, self._rewrite = self._rewrite, set()
            batch = [entry for entry in self._pending if entry[0] not in rewrite]
            batch += [entry for job_id in rewrite for entry in self._attempts.get(job_id, [])]
            self._pending = []
            # Only an attempt whose `start` went through here can be checked and written again.
            expected = {job_id: self._written.get(job_id, 0) for job_id, *_ in batch if self._began(job_id)}
        if not batch:
            return False
        try:
            refused = _append(self.store, batch, expected)
        except BaseException:
            with self._lock:  # back in front, in order: the next flush (at the latest the task's own) retries
                self._pending[:0] = [entry for entry in batch if entry[0] not in rewrite]
                self._rewrite |= rewrite
            raise
        with self._lock:
            for job_id in {entry[0] for entry in batch} - refused:
                self._written[job_id] = _count_after(self._written.get(job_id, 0), batch, job_id)
            self._rewrite |= {job_id for job_id in refused if self._began(job_id)}
            return bool(self._rewrite)

    def _began(self, job_id: str) -> bool:
        attempt = self._attempts.get(job_id)
        return bool(attempt) and attempt[0][2] == "start"

    def discard(self, job_id: str) -> None:
        """Drop the job's pending events: a job whose last write failed moves on (another attempt, another
        tier), and its old tokens written late would land after that attempt's `start`."""
        with self._lock:
            self._pending = [entry for entry in self._pending if entry[0] != job_id]
            self._forget(job_id)

    def finish(self, job_id: str) -> None:
        """The job's attempt ended (its events are written, its final comes next): nothing to write again."""
        with self._lock:
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        self._attempts.pop(job_id, None)
        self._written.pop(job_id, None)
        self._rewrite.discard(job_id)

    def _run(self) -> None:
        while True:
            self._queued.wait()
            self._queued.clear()  # what is published from here on is written by this round or the next
            time.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:  # kept for the next batch; the task's own flush raises if Redis stays away
                log.warning("could not write a batch of token events; it waits for the next", exc_info=True)
                self._queued.set()


def _count_after(written: int, batch: list[tuple[str, Optional[int], str, str]], job_id: str) -> int:
    """The job's events in its stream after `batch` was appended: a `start` begins the count again."""
    for _, _, event, _ in (entry for entry in batch if entry[0] == job_id):
        written = 1 if event == "start" else written + 1
    return written


def final_from_record(record: dict) -> dict:
    """The final event's data for a finished job: its status and result fields (or its error)."""
    data = {"id": record["id"], "status": record["status"], **record.get("result", {})}
    if "error" in record:
        data["error"] = record["error"]
    return data


def read_after(store: JobStore, job_id: str, last_id: str) -> list[StreamEvent]:
    """The job's entries after `last_id`, read at once (no blocking)."""
    reply = store.redis.xread({stream_key(job_id): last_id})
    return [event for _, events in parse_entries(reply) for event in events]


def parse_entries(reply) -> list[tuple[str, list[StreamEvent]]]:
    """(key, events) per stream of an XREAD reply (redis-py gives [key, entries] pairs with either protocol)."""
    if not reply:
        return []
    return [(key.decode() if isinstance(key, bytes) else key,
             [StreamEvent(fields[b"event"].decode(), json.loads(fields[b"data"]), entry_id.decode())
              for entry_id, fields in entries])
            for key, entries in reply]


def finished_record(store: JobStore, job_id: str) -> Optional[dict]:
    """The job's record if it has ended (or a failed one if it is gone), None while it runs."""
    record = store.get(job_id)
    if record is None:  # expired or deleted while we followed it: nothing more will come
        return expired_record(job_id)
    return record if is_final(record["status"]) else None


def expired_record(job_id: str) -> dict:
    return {"id": job_id, "status": "failed", "error": {"type": "NotFound", "message": "the job expired"}}


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>", or "0") as a tuple that orders like Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
