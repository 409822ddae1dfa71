"""`GET /v1/jobs/<id>/stream`: a job's tokens as Server-Sent Events, from the start until it ends."""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Iterator, Optional

from flask import Blueprint, Response, current_app, request, stream_with_context

from tasks.jobs import job_store
from tasks.streaming import StreamEvent, follow_job
from webapp.errors import APIError
from webapp.jobs import JOB_ID

bp = Blueprint("stream", __name__)
STREAM_ENTRY_ID = re.compile(r"^\d+-\d+$")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.record_once
def _config_defaults(state) -> None:
    """Settings from the environment unless the app's test config set them."""
    state.app.config.setdefault("STREAM_TIMEOUT_S", float(os.environ.get("STREAM_TIMEOUT_S", "600")))
    state.app.config.setdefault("STREAM_HEARTBEAT_S", float(os.environ.get("STREAM_HEARTBEAT_S", "10")))


def sse(data: str, event: Optional[str] = None, event_id: Optional[str] = None) -> str:
    """One Server-Sent Event; `data` must be a single line (JSON is)."""
    head = (f"id: {event_id}\n" if event_id else "") + (f"event: {event}\n" if event else "")
    return f"{head}data: {data}\n\n"


HEARTBEAT = ": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies see traffic


def sse_response(body: Iterable[str], **headers: str) -> Response:
    return Response(stream_with_context(body), mimetype="text/event-stream", headers={**SSE_HEADERS, **headers})


def job_events(job_id: str, last_id: str = "0") -> Iterator[StreamEvent]:
    """`follow_job` with this app's time limits."""
    config = current_app.config
    return follow_job(job_id, last_id, timeout_s=config["STREAM_TIMEOUT_S"], heartbeat_s=config["STREAM_HEARTBEAT_S"])


def require_job(job_id: str) -> dict:
    record = job_store().get(job_id) if JOB_ID.match(job_id) else None
    if record is None:
        raise APIError(404, "not_found", f"no job {job_id}")
    return record


@bp.get("/v1/jobs/<job_id>/stream")
def stream_job(job_id: str):
    require_job(job_id)
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
