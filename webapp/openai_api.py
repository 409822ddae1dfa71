"""OpenAI-compatible endpoints, so existing clients work unchanged: chat completions, legacy
completions and models (embeddings: webapp.embeddings).

`model` is "auto" (routed), "small", "large" or a served model id (which forces its tier).
The routing decision comes back in `X-Route-*` headers and in an extra `routing` field.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from engines.provider import served_spec
from jobs.queues import TIERS
from webapp.context import web
from webapp.embeddings import embedding_model_entries
from webapp.errors import APIError
from webapp.jobs import finished_result, load_json_body, with_cache_control
from webapp.openai_format import (ChatFormat, CompletionFormat, job_from_chat, job_from_completion, result_choices,
                                  usage)
from webapp.openai_schemas import ChatCompletionRequestSchema, CompletionRequestSchema, openai_error
from webapp.openai_stream import Format, route_headers, routing_info, streamed_completion
from webapp.submission import submit_job

bp = Blueprint("openai", __name__)
OPENAI_PATHS = ("/v1/chat/", "/v1/completions", "/v1/embeddings", "/v1/models")
ROUTING_MODELS = ("auto", "small", "large")  # model names that pick routing or a tier


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


def _answer(body: dict, record: dict, style: Format) -> Response:
    """The finished job as the API's response object, with the routing decision in headers."""
    result = finished_result(record["id"])
    routing = routing_info(result.get("routing") or {}, result.get("cached", False))
    response = jsonify({
        "id": f"{style.id_prefix}{record['id']}",
        "object": style.object,
        "created": int(record["created_at"]),
        "model": result["model_used"],
        "choices": [style.choice(answer) for answer in result_choices(result)],
        "usage": usage(result),
        "routing": routing,
        "job_id": record["id"],
    })
    response.headers.update(route_headers(routing, record["id"]))
    return response


def _respond(body: dict, record: dict, style: Format) -> Response:
    if body["stream"]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return streamed_completion(record, include_usage, style)
    return _answer(body, record, style)


@bp.post("/v1/chat/completions")
def chat_completions():
    body = load_json_body(web().schema(ChatCompletionRequestSchema))
    record = submit_job(with_cache_control(job_from_chat(body, tier_for_model(body["model"]))))
    return _respond(body, record, ChatFormat(body))


@bp.post("/v1/completions")
def completions():
    body = load_json_body(web().schema(CompletionRequestSchema))
    record = submit_job(with_cache_control(job_from_completion(body, tier_for_model(body["model"]))))
    return _respond(body, record, CompletionFormat(body))


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
    return entries + embedding_model_entries(web().settings)


@bp.get("/v1/models")
def list_models():
    return jsonify({"object": "list", "data": model_entries()})


@bp.get("/v1/models/<path:model>")
def get_model(model: str):
    entry = next((e for e in model_entries() if e["id"] == model), None)
    if entry is None:
        raise APIError(404, "model_not_found", f"The model '{model}' does not exist.", param="model")
    return jsonify(entry)
