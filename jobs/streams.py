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


def _append(store: JobStore, entries: list[tuple[str, Optional[int], str, str]]) -> None:
    """Append (job id, fence, event, JSON data) entries in one round trip, a script call per job and
    delivery, in order; each stream expires with its job."""
    groups: dict[tuple[str, Optional[int]], list[str]] = {}
    for job_id, fence, event, data in entries:
        groups.setdefault((job_id, fence), []).extend((event, data))
    pipe = store.redis.pipeline(transaction=False)
    for (job_id, fence), events in groups.items():
        store.fenced_append(keys=[job_key(job_id), stream_key(job_id)],
                            args=[store.ttl_s, "" if fence is None else fence, *events], client=pipe)
    pipe.execute()


class TokenBatches:
    """One per worker process: the token events of every job it runs, written together every `interval_s`
    in one Redis round trip, instead of one per token per job.

    A job's first token is written at once (time to first token is not delayed), later ones wait at
    most `interval_s`. `flush()` writes what is pending now: a task calls it before its job's final
    event, so a stream's tokens always come before its end. Batches are written one at a time, in
    the order their events came, so a job's tokens keep their order. `interval_s` 0 writes each at once.
    """

    def __init__(self, store: JobStore, interval_s: float) -> None:
        self.store, self.interval_s = store, interval_s
        self._pending: list[tuple[str, Optional[int], str, str]] = []  # (job id, fence, event, data as JSON)
        self._lock = threading.Lock()  # guards _pending
        self._writing = threading.Lock()  # one batch at a time: order across batches
        self._queued = threading.Event()  # set by publish: an idle process's flusher sleeps until then
        self._flusher: Optional[threading.Thread] = None

    def publish(self, job_id: str, event: str, data: dict, at_once: bool = False, fence: Optional[int] = None) -> None:
        with self._lock:
            self._pending.append((job_id, fence, event, json.dumps(data)))
            if self._flusher is None and self.interval_s > 0:
                self._flusher = threading.Thread(target=self._run, name="token-batches", daemon=True)
                self._flusher.start()
        self._queued.set()
        if at_once or self.interval_s <= 0:
            self.flush()

    def flush(self) -> None:
        """Write every pending event now (raises what Redis raises)."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                _append(self.store, batch)
            except BaseException:
                with self._lock:  # back in front, in order: the next flush (at the latest the task's own) retries
                    self._pending[:0] = batch
                raise

    def discard(self, job_id: str) -> None:
        """Drop the job's pending events: a job whose last write failed moves on (another attempt, another
        tier), and its old tokens written late would land after that attempt's `start`."""
        with self._lock:
            self._pending = [entry for entry in self._pending if entry[0] != job_id]

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
