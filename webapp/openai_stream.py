"""OpenAI-style streaming of a job: its events as chunks of a `Format` (chat or legacy completion),
then `[DONE]`.

The stream never takes text back: when the job starts over (a second `start` after text went out:
it was redelivered, or moved to the other tier) or Redis becomes unreachable, it ends with an
in-stream error, the shape OpenAI's clients raise.
"""
from __future__ import annotations

import json
import time
from typing import Iterator, Protocol

from flask import Response

from jobs.status import is_final
from jobs.streams import StreamEvent
from webapp.context import web
from webapp.openai_format import ChatFormat, result_choices, usage
from webapp.stream import BACKEND_ERRORS, HEARTBEAT, UNAVAILABLE, job_events, sse, sse_response, stream_deadline
from webapp.submission import time_left

ROUTING_POLL_S = 0.05


class Format(Protocol):
    """An API's response and chunk shapes (webapp.openai_format)."""

    object: str
    chunk_object: str
    id_prefix: str

    def choice(self, answer: dict) -> dict: ...

    def opening(self, n: int) -> list[dict]: ...

    def text(self, index: int, text: str, logprobs: list | None) -> dict: ...

    def finish(self, index: int, reason: str | None) -> dict: ...


def streamed_completion(record: dict, include_usage: bool, style: Format | None = None) -> Response:
    """The job's answer as stream chunks of `style` (default: chat), then `[DONE]`."""
    style = style or ChatFormat({})
    job_id = record["id"]
    deadline = stream_deadline()  # one for the whole request: the routing wait and the stream share it
    routed = wait_for_routing(job_id, deadline)
    early_result = routed.get("result") or {}  # a job can end before streaming starts (cache hit)
    decision = routed.get("routing") or early_result.get("routing") or {}
    model = early_result.get("model_used") or web().models.get(decision.get("tier"), "auto")
    events = job_events(job_id, deadline=deadline)
    base = {"id": f"{style.id_prefix}{job_id}", "object": style.chunk_object, "created": int(record["created_at"]),
            "model": model}
    # an exact hit's record keeps little of its request: its result says how many answers there are
    answers = max(int((record.get("request") or {}).get("n") or 1), len(early_result.get("choices") or ()))

    def chunk(*choices: dict, **extra) -> str:
        return sse(json.dumps({**base, "choices": list(choices), **extra}))

    def body() -> Iterator[str]:
        for opening in style.opening(answers):
            yield chunk(opening)
        streamed_text = False
        try:
            for event in events:
                if event.event == "heartbeat":
                    yield HEARTBEAT
                elif event.event == "start" and streamed_text:
                    # The job starts over (redelivered, or moved to the other tier): its text so far is
                    # void, and a stream cannot take text back. End it rather than send text twice.
                    yield sse(json.dumps(restart_error(job_id)))
                    break
                elif event.event == "token":
                    streamed_text = True
                    data = event.data
                    yield chunk(style.text(data.get("index", 0), data["text"], data.get("logprobs")))
                elif event.event == "final" and event.data["status"] == "succeeded":
                    yield from finished(event.data, streamed_text)
                elif event.event in ("final", "timeout"):
                    yield sse(json.dumps(stream_error(event)))
        except BACKEND_ERRORS:
            yield sse(json.dumps({"error": {"message": UNAVAILABLE["message"], "type": "server_error",
                                            "param": None, "code": UNAVAILABLE["code"]}}))
        finally:
            events.close()  # leaves the stream hub now, also after a `break`
        yield sse("[DONE]")

    def finished(result: dict, streamed_text: bool) -> Iterator[str]:
        routing = routing_info(result.get("routing") or decision, result.get("cached", False))
        for answer in result_choices(result):
            if not streamed_text and answer["text"]:  # answered without generation (cache)
                yield chunk(style.text(answer["index"], answer["text"], answer["logprobs"]))
            yield chunk(style.finish(answer["index"], answer["finish_reason"]), routing=routing)
        if include_usage:
            yield sse(json.dumps({**base, "choices": [], "usage": usage(result)}))

    return sse_response(body(), **route_headers(routing_info(decision, early_result.get("cached")), job_id))


def wait_for_routing(job_id: str, deadline: float) -> dict:
    """The job record once the router has decided (or the job ended, or the deadline passed), so
    headers can say where it went."""
    while True:
        record = web().store.get(job_id) or {"id": job_id, "status": "failed"}
        if "routing" in record or is_final(record["status"]) or time_left(deadline) <= 0:
            return record
        time.sleep(min(ROUTING_POLL_S, time_left(deadline)))


def restart_error(job_id: str) -> dict:
    """A job that started over after text was streamed (redelivered, or tier fallback), as an in-stream error."""
    message = (f"job {job_id} started over after part of its answer was streamed (it was delivered again, or "
               "moved to the other tier); the text so far is void: poll the job or ask again")
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "job_restarted"}}


def stream_error(event: StreamEvent) -> dict:
    """A job that timed out or did not succeed, as an in-stream error the OpenAI clients raise."""
    if event.event == "timeout":
        message, code = event.data["message"], "timeout"
    else:
        detail = (event.data.get("error") or {}).get("message")
        message, code = f"the job ended as {event.data['status']}" + (f": {detail}" if detail else ""), "job_failed"
    return {"error": {"message": message, "type": "server_error", "param": None, "code": code}}


def routing_info(decision: dict, cached: bool | str | None) -> dict:
    return {**decision, "cached": cached}


def route_headers(routing: dict, job_id: str) -> dict:
    headers = {"X-Job-Id": job_id}
    for field in ("tier", "intent", "score", "rule"):
        if routing.get(field) is not None:
            headers[f"X-Route-{field.capitalize()}"] = str(routing[field])
    if routing.get("cached") is not None:
        headers["X-Cache"] = "hit" if routing["cached"] else "miss"
    return headers
