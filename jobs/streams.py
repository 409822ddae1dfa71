"""Token streams: one Redis Stream per job, written by the generation task, read by any web process.

Entries are `{"event": <name>, "data": <json>}`: `start` (tier, model, routing) when a
generation attempt begins, `token` (text) per chunk, and `final` (status and the result
fields), written with the job's final status in one step (`JobStore.move`). A stream expires
with its job record. This module writes and reads entries; `jobs.follow` follows a job live.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

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
