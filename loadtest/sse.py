"""Reading Server-Sent Events (`text/event-stream`) as the platform's job stream sends them."""
from __future__ import annotations

import json
from typing import Iterable, Iterator, Optional

from jobs.status import JobStatus, is_final as is_final_status

FINAL_EVENTS = ("done", "end", "final", "result", "complete", "completed", "error")


def _json(data: str) -> Optional[dict]:
    try:
        payload = json.loads(data)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def is_final(event: str, data: str) -> bool:
    """A named final event, or an unnamed one that carries the job's end (status or result)."""
    if event in FINAL_EVENTS or data.strip() == "[DONE]":
        return True
    payload = _json(data) or {}
    return is_final_status(payload.get("status", "")) or "result" in payload


def failed(data: str) -> bool:
    return (_json(data) or {}).get("status") in (JobStatus.FAILED, JobStatus.CANCELLED)


def sse_events(lines: Iterable[Optional[str]]) -> Iterator[tuple[str, str]]:
    """(event name, data) pairs of a Server-Sent Events stream; unnamed events are "message"."""
    for event, data, _ in sse_entries(lines):
        yield event, data


def sse_entries(lines: Iterable[Optional[str]]) -> Iterator[tuple[str, str, Optional[str]]]:
    """(event name, data, id) of each event; the id is what a reconnecting client sends as Last-Event-ID."""
    event, data, entry_id = "message", [], None
    for line in lines:
        if line is None:
            continue
        if line == "":
            if data:
                yield event, "\n".join(data), entry_id
            event, data, entry_id = "message", [], None
        elif line.startswith(":"):
            continue  # a comment / keep-alive
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                entry_id = value
    if data:
        yield event, "\n".join(data), entry_id
