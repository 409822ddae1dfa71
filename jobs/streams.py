"""Token streams: one Redis Stream per job, written by the generation task, read by any web process.

Entries are `{"event": <name>, "data": <json>}`: `start` (tier, model, routing) when a
generation attempt begins, `token` (text) per chunk, and `final` (status and the result
fields), written with the job's final status in one step (`JobStore.move`). A stream expires
with its job record.

`follow_job` replays a stream from any point and follows it until the job ends. A job can
end without a `final` entry (a cache hit, a failure, a cancellation): then the final event is
made from the job record, so a reader never waits for nothing.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from jobs.status import is_final
from jobs.store import JobStore, stream_key


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream; `id` is the Redis entry id (None for made-up events)."""

    event: str  # start | token | final | timeout | heartbeat
    data: dict
    id: Optional[str] = None


def publish(store: JobStore, job_id: str, event: str, data: dict) -> None:
    """Append one event to the job's stream and keep the stream's expiry in step with the job."""
    key = stream_key(job_id)
    pipe = store.redis.pipeline(transaction=False)
    pipe.xadd(key, {"event": event, "data": json.dumps(data)})
    pipe.expire(key, store.ttl_s)
    pipe.execute()


def final_from_record(record: dict) -> dict:
    """The final event's data for a finished job: its status and result fields (or its error)."""
    data = {"id": record["id"], "status": record["status"], **record.get("result", {})}
    if "error" in record:
        data["error"] = record["error"]
    return data


def follow_job(store: JobStore, job_id: str, last_id: str = "0", timeout_s: float = 300, heartbeat_s: float = 10,
               poll_s: float = 1.0) -> Iterator[StreamEvent]:
    """Yield the job's events after `last_id` as they come, ending with a `final` event.

    Yields a `heartbeat` after each `heartbeat_s` without events, so that callers can keep
    idle connections alive, and a `timeout` event if the job has not ended after `timeout_s`.
    """
    redis = store.redis
    deadline = time.monotonic() + timeout_s
    last_sent = time.monotonic()
    # A blocking read must return before the client's socket timeout (0.5 s in the web app).
    socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout") or poll_s * 2
    poll_s = min(poll_s, heartbeat_s, socket_timeout / 2)
    block_ms = None  # the first read does not wait, so a job that has already ended answers at once
    while time.monotonic() < deadline:
        events = _read(store, job_id, last_id, block_ms)
        block_ms = max(1, int(min(poll_s, deadline - time.monotonic()) * 1000))
        for event in events:
            last_id = event.id
            yield event
            if event.event == "final":
                return
        if events:
            last_sent = time.monotonic()
            continue
        finished = _finished_record(store, job_id)
        if finished is not None:
            # Events may have landed between the read and the record: deliver them first.
            for event in _read(store, job_id, last_id, None):
                yield event
                if event.event == "final":
                    return
            yield StreamEvent("final", final_from_record(finished))
            return
        if time.monotonic() - last_sent >= heartbeat_s:
            last_sent = time.monotonic()
            yield StreamEvent("heartbeat", {})
    record = store.get(job_id) or {}
    yield StreamEvent("timeout", {"id": job_id, "status": record.get("status", "unknown"),
                                  "message": f"the job did not end within {timeout_s:g}s; poll it"})


def _read(store: JobStore, job_id: str, last_id: str, block_ms: Optional[int]) -> list[StreamEvent]:
    reply = store.redis.xread({stream_key(job_id): last_id}, block=block_ms)
    if not reply:
        return []
    (_, entries), = reply
    return [StreamEvent(fields[b"event"].decode(), json.loads(fields[b"data"]), entry_id.decode())
            for entry_id, fields in entries]


def _finished_record(store: JobStore, job_id: str) -> Optional[dict]:
    record = store.get(job_id)
    if record is None:  # expired or deleted while we followed it: nothing more will come
        return {"id": job_id, "status": "failed", "error": {"type": "NotFound", "message": "the job expired"}}
    return record if is_final(record["status"]) else None
