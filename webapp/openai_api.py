"""OpenAI-compatible endpoints, so existing clients work unchanged: chat completions and models.

`model` is "auto" (routed), "small", "large" or a served model id (which forces its tier).
The routing decision comes back in `X-Route-*` headers and in an extra `routing` field.
"""
from __future__ import annotations

import json
import time
from typing import Iterator

from flask import Blueprint, Response, jsonify, request

from engines.provider import served_spec
from jobs.queues import TIERS
from jobs.status import is_final
from jobs.streams import StreamEvent
from webapp.context import web
from webapp.errors import APIError
from webapp.jobs import finished_result, load_json_body
from webapp.openai_schemas import ChatCompletionRequestSchema, last_user_message, openai_error
from webapp.stream import BACKEND_ERRORS, HEARTBEAT, UNAVAILABLE, job_events, sse, sse_response, stream_deadline
from webapp.submission import submit_job, time_left

bp = Blueprint("openai", __name__)
OPENAI_PATHS = ("/v1/chat/", "/v1/models")
ROUTING_MODELS = ("auto", "small", "large")  # model names that pick routing or a tier
DEFAULT_MAX_TOKENS = 128
ROUTING_POLL_S = 0.05


@bp.after_app_request
def openai_error_shape(response: Response) -> Response:
    """Errors on the OpenAI paths, whoever raised them (404, 405, 503...), leave in OpenAI's shape."""
    if response.status_code >= 400 and response.is_json and request.path.startswith(OPENAI_PATHS):
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("error"), dict) and "type" not in body["error"]:
            response.set_data(json.dumps(openai_error(response.status_code, body["error"])))
    return response


def tier_for_model(model: str) -> str:
    """"auto", "small", "large", or the tier that serves the model id; else a 404 like OpenAI's."""
    if model in ROUTING_MODELS:
        return model
    for tier, model_id in web().models.items():
        if model == model_id:
            return tier
    raise APIError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")


def job_from_chat(body: dict, tier: str) -> dict:
    """The job `submit_job` queues: the messages for the model, the last user message for the router."""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    temperature = body.get("temperature")
    return {
        "prompt": last_user_message(body["messages"]),
        "messages": [{"role": m["role"], "content": m["content"]} for m in body["messages"]],
        "max_tokens": max_tokens,
        "temperature": 0.0 if temperature is None else temperature,
        "tier": tier,
    }


@bp.post("/v1/chat/completions")
def chat_completions():
    body = load_json_body(ChatCompletionRequestSchema(web().settings))
    record = submit_job(job_from_chat(body, tier_for_model(body["model"])))
    if body["stream"]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return streamed_completion(record, include_usage)
    result = finished_result(record["id"])
    routing = routing_info(result.get("routing") or {}, result.get("cached", False))
    completion = {
        "id": f"chatcmpl-{record['id']}",
        "object": "chat.completion",
        "created": int(record["created_at"]),
        "model": result["model_used"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result["response"]},
                     "finish_reason": finish_reason(result)}],
        "usage": usage(result),
        "routing": routing,
        "job_id": record["id"],
    }
    response = jsonify(completion)
    response.headers.update(route_headers(routing, record["id"]))
    return response


def streamed_completion(record: dict, include_usage: bool) -> Response:
    """The job's answer as `chat.completion.chunk` events, then `[DONE]`.

    The stream never takes text back: when the job starts over (a second `start` after text went
    out: it was redelivered, or moved to the other tier) or Redis becomes unreachable, it ends with
    an in-stream error.
    """
    job_id = record["id"]
    deadline = stream_deadline()  # one for the whole request: the routing wait and the stream share it
    routed = wait_for_routing(job_id, deadline)
    early_result = routed.get("result") or {}  # a job can end before streaming starts (cache hit)
    decision = routed.get("routing") or early_result.get("routing") or {}
    model = early_result.get("model_used") or web().models.get(decision.get("tier"), "auto")
    events = job_events(job_id, deadline=deadline)
    chunk_base = {"id": f"chatcmpl-{job_id}", "object": "chat.completion.chunk",
                  "created": int(record["created_at"]), "model": model}

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse(json.dumps({**chunk_base, "choices": [choice], **extra}))

    def body() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        streamed_text = False
        try:
            for event in events:
                if event.event == "heartbeat":
                    yield HEARTBEAT
                elif event.event == "start" and streamed_text:
                    # The job starts over (redelivered, or moved to the other tier): its text so far is
                    # void, and a chat stream cannot take text back. End it rather than send text twice.
                    yield sse(json.dumps(restart_error(job_id)))
                    break
                elif event.event == "token":
                    streamed_text = True
                    yield chunk({"content": event.data["text"]})
                elif event.event == "final" and event.data["status"] == "succeeded":
                    result = event.data
                    if not streamed_text and result.get("response"):  # answered without generation (cache)
                        yield chunk({"content": result["response"]})
                    routing = routing_info(result.get("routing") or decision, result.get("cached", False))
                    yield chunk({}, finish_reason(result), routing=routing)
                    if include_usage:
                        yield sse(json.dumps({**chunk_base, "choices": [], "usage": usage(result)}))
                elif event.event in ("final", "timeout"):
                    yield sse(json.dumps(stream_error(event)))
        except BACKEND_ERRORS:
            yield sse(json.dumps({"error": {"message": UNAVAILABLE["message"], "type": "server_error",
                                            "param": None, "code": UNAVAILABLE["code"]}}))
        finally:
            events.close()  # leaves the stream hub now, also after a `break`
        yield sse("[DONE]")

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


def routing_info(decision: dict, cached) -> dict:
    return {**decision, "cached": cached}


def route_headers(routing: dict, job_id: str) -> dict:
    headers = {"X-Job-Id": job_id}
    for field in ("tier", "intent", "score", "rule"):
        if routing.get(field) is not None:
            headers[f"X-Route-{field.capitalize()}"] = str(routing[field])
    if routing.get("cached") is not None:
        headers["X-Cache"] = "hit" if routing["cached"] else "miss"
    return headers


def finish_reason(result: dict) -> str:
    return "length" if result.get("finish_reason") == "length" else "stop"


def usage(result: dict) -> dict:
    prompt, completion = result.get("prompt_tokens", 0), result.get("tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def model_entries() -> list[dict]:
    """The served models (one per tier), then the routing aliases."""
    entries = []
    for tier in TIERS:
        model_id, path = served_spec(tier, web().settings)
        created = int(path.stat().st_mtime) if path.exists() else 0
        entries.append({"id": model_id, "object": "model", "created": created, "owned_by": "local",
                        "tier": tier})
    for alias in ROUTING_MODELS:
        entries.append({"id": alias, "object": "model", "created": 0, "owned_by": "router", "tier": alias})
    return entries


@bp.get("/v1/models")
def list_models():
    return jsonify({"object": "list", "data": model_entries()})


@bp.get("/v1/models/<path:model>")
def get_model(model: str):
    entry = next((e for e in model_entries() if e["id"] == model), None)
    if entry is None:
        raise APIError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")
    return jsonify(entry)
