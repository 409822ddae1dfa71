"""`GET /v1/jobs/<id>/stream`: a job's tokens as Server-Sent Events, from the start until it ends."""
from __future__ import annotations

import json
import logging
import re
from typing import Iterable, Iterator, Optional

import redis
from flask import Blueprint, Response, request, stream_with_context

from jobs.follow import follow_job
from jobs.streams import StreamEvent
from webapp.context import web
from webapp.jobs import existing_job
from webapp.submission import request_deadline, stream_hub

log = logging.getLogger(__name__)
bp = Blueprint("stream", __name__)
STREAM_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
ENTRY_ID_PART_MAX = 2**64 - 1  # Redis refuses larger parts ("Invalid stream ID")


def resume_after(last_event_id: str) -> str:
    """Where a reconnecting EventSource resumes: after its Last-Event-ID when that is a stream
    entry id Redis accepts, else from the start."""
    if not STREAM_ENTRY_ID.match(last_event_id):
        return "0"
    return last_event_id if all(int(part) <= ENTRY_ID_PART_MAX for part in last_event_id.split("-")) else "0"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A Redis that dies or hangs while a stream is open: the stream ends with an error event.
BACKEND_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
UNAVAILABLE = {"code": "service_unavailable", "message": "the queue backend (Redis) is unreachable; retry later"}


def sse(data: str, event: Optional[str] = None, event_id: Optional[str] = None) -> str:
    """One Server-Sent Event; `data` must be a single line (JSON is)."""
    head = (f"id: {event_id}\n" if event_id else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n"


HEARTBEAT = ": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies see traffic


def sse_response(body: Iterable[str], **headers: str) -> Response:
    return Response(stream_with_context(body), mimetype="text/event-stream", headers={**SSE_HEADERS, **headers})


def stream_deadline() -> float:
    """A stream request's deadline: STREAM_TIMEOUT_S from its start."""
    return request_deadline(web().settings.stream_timeout_s)


def job_events(job_id: str, last_id: str = "0", deadline: Optional[float] = None) -> Iterator[StreamEvent]:
    """`follow_job` with this app's heartbeat, until `deadline` (default: the stream request's)."""
    context = web()
    deadline = stream_deadline() if deadline is None else deadline
    return follow_job(context.store, job_id, last_id, deadline=deadline,
                      heartbeat_s=context.settings.stream_heartbeat_s, hub=stream_hub())


@bp.get("/v1/jobs/<job_id>/stream")
def stream_job(job_id: str):
    existing_job(job_id)
    # EventSource sends Last-Event-ID when it reconnects: resume after it instead of replaying.
    last_id = request.headers.get("Last-Event-ID", "")
    events = job_events(job_id, resume_after(last_id))

    def body() -> Iterator[str]:
        # `start` events pass through, a second one included: a redelivered job starts over and
        # clients drop the text they have (docs/api.md).
        try:
            for event in events:
                if event.event == "heartbeat":
                    yield HEARTBEAT
                else:
                    yield sse(json.dumps(event.data), event.event, event.id)
        except BACKEND_ERRORS as exc:
            log.warning("stream of job %s ended: backend unavailable (%s)", job_id, type(exc).__name__)
            yield sse(json.dumps({"error": UNAVAILABLE}), "error")

    return sse_response(body())
