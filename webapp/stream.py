"""`GET /v1/jobs/<id>/stream`: a job's tokens as Server-Sent Events, from the start until it ends."""
from __future__ import annotations

import json
import re
from typing import Iterable, Iterator, Optional

from flask import Blueprint, Response, request, stream_with_context

from jobs.streams import StreamEvent, follow_job
from webapp.context import web
from webapp.jobs import existing_job

bp = Blueprint("stream", __name__)
STREAM_ENTRY_ID = re.compile(r"^\d+-\d+$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: str, event: Optional[str] = None, event_id: Optional[str] = None) -> str:
    """One Server-Sent Event; `data` must be a single line (JSON is)."""
    head = (f"id: {event_id}\n" if event_id else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n"


HEARTBEAT = ": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies see traffic


def sse_response(body: Iterable[str], **headers: str) -> Response:
    return Response(stream_with_context(body), mimetype="text/event-stream", headers={**SSE_HEADERS, **headers})


def job_events(job_id: str, last_id: str = "0") -> Iterator[StreamEvent]:
    """`follow_job` with this app's time limits."""
    context = web()
    return follow_job(context.store, job_id, last_id, timeout_s=context.settings.stream_timeout_s,
                      heartbeat_s=context.settings.stream_heartbeat_s)


@bp.get("/v1/jobs/<job_id>/stream")
def stream_job(job_id: str):
    existing_job(job_id)
    # EventSource sends Last-Event-ID when it reconnects: resume after it instead of replaying.
    last_id = request.headers.get("Last-Event-ID", "")
    events = job_events(job_id, last_id if STREAM_ENTRY_ID.match(last_id) else "0")

    def body() -> Iterator[str]:
        for event in events:
            if event.event == "heartbeat":
                yield HEARTBEAT
            else:
                yield sse(json.dumps(event.data), event.event, event.id)

    return sse_response(body())
