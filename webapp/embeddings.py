"""`POST /v1/embeddings`, OpenAI-compatible: sentence vectors from the routing worker's embedder.

The web app validates the request and sends the texts to the routing queue by task name
(`tasks.routing.embed`); the routing worker encodes them with the router's model in its float form
(all-MiniLM-L6-v2, EMBEDDING_BACKEND; 384 dimensions, unit length), merged into batches. No job record
is kept.
Nothing here loads a model.
"""
from __future__ import annotations

import base64
from typing import Optional

import numpy as np
from apispec import APISpec
from flask import Blueprint, g, jsonify
from marshmallow import ValidationError, fields, validate, validates_schema

from jobs.queues import DEFAULT_PRIORITY, ROUTING_QUEUE
from settings import Settings, get_settings
from webapp.broker import EmbeddingFailed, EmbeddingTimeout
from webapp.context import WebContext, web
from webapp.errors import APIError
from webapp.jobs import load_json_body
from webapp.schemas import LimitedSchema, StrictInteger
from webapp.submission import ensure_budget, request_deadline, time_left

bp = Blueprint("embeddings", __name__)
EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2's width; the only `dimensions` accepted (no truncation)
ENCODING_FORMATS = ("float", "base64")
TOKEN_ARRAYS = "token arrays are not supported; send text"


class EmbeddingInput(fields.Field):
    """`input`: one string, or a list of strings; always loaded as a list. Token arrays are refused."""

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValidationError("Must be a string or a list of strings.")
        # OpenAI also takes token ids (a list of ints, or a list of such lists); this tokenizer's ids differ.
        if any(isinstance(item, (int, list)) and not isinstance(item, bool) for item in value):
            raise ValidationError(TOKEN_ARRAYS)
        errors = {index: ["Not a valid string."] for index, item in enumerate(value) if not isinstance(item, str)}
        if errors:
            raise ValidationError(errors)
        return value


class EmbeddingRequestSchema(LimitedSchema):
    """Body of `POST /v1/embeddings`: OpenAI's parameters, with the limits of this service."""

    model = fields.String(required=True, validate=validate.Length(min=1),
                          metadata={"description": "the embedding model's id, as `GET /v1/models` lists it"})
    input = EmbeddingInput(required=True, metadata={
        "description": "a string, or a list of strings (each non-empty and within the prompt limits); "
                       "token arrays are refused",
        "oneOf": [{"type": "string", "minLength": 1},
                  {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]})
    encoding_format = fields.String(load_default="float", allow_none=True, validate=validate.OneOf(ENCODING_FORMATS),
                                    metadata={"description": "base64: each vector's little-endian float32 bytes"})
    dimensions = StrictInteger(allow_none=True, validate=validate.Equal(
        EMBEDDING_DIMENSIONS, error=f"Only {EMBEDDING_DIMENSIONS} dimensions are supported."))
    user = fields.String(allow_none=True, metadata={"description": "accepted and ignored"})

    @validates_schema(pass_original=True)
    def inputs_are_usable(self, data: dict, original: dict, **_) -> None:
        texts = data["input"]
        limit = self.settings.embedding_max_inputs
        if not 1 <= len(texts) <= limit:
            raise ValidationError(f"Must hold 1 to {limit} strings, not {len(texts)}.", "input")
        errors = {}
        for index, text in enumerate(texts):
            if not text:
                errors[index] = ["Must not be empty."]
                continue
            try:
                self.check_text([text], "The text")  # the prompt limits apply to each text on its own
            except ValidationError as error:
                errors[index] = error.messages
        if errors:  # a list's errors name their items (`input[3]`); a lone string's, `input`
            raise ValidationError(errors[0] if isinstance(original.get("input"), str) else errors, "input")


def embedding_model_entries(settings: Settings) -> list[dict]:
    """The embedding model as `GET /v1/models` lists it."""
    return [{"id": settings.embedding_model_id(), "object": "model", "created": 0, "owned_by": "local",
             "tier": "embedding", "dimensions": EMBEDDING_DIMENSIONS}]


def ensure_routing_capacity(context: WebContext) -> None:
    """A 429 `queue_full` while the routing queue is at its depth limit: embeddings queue there too."""
    limit = context.settings.queue_limits()[ROUTING_QUEUE]
    depth = context.broker.queue_depths(context.store, queues=(ROUTING_QUEUE,))[ROUTING_QUEUE]
    if depth >= limit:
        raise APIError(429, "queue_full", f"queue {ROUTING_QUEUE} holds {depth} jobs, its limit; retry later",
                       headers={"Retry-After": str(context.settings.queue_retry_after_s)}, queue=ROUTING_QUEUE)


def encoded(vector: list[float], encoding_format: Optional[str]) -> list[float] | str:
    """One vector as the response carries it: floats, or (base64) its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


@bp.post("/v1/embeddings")
def create_embeddings():
    context = web()
    body = load_json_body(context.schema(EmbeddingRequestSchema))
    model_id = context.settings.embedding_model_id()
    if body["model"] != model_id:
        raise APIError(404, "model_not_found", f"The model '{body['model']}' does not exist; embeddings are "
                       f"served by '{model_id}'.", param="model")
    key = g.get("api_key")
    priority = DEFAULT_PRIORITY
    if key:
        ensure_budget(context, key)
        if key.get("max_priority") is not None:  # the key's ceiling, as its jobs have it
            priority = min(priority, key["max_priority"])
    ensure_routing_capacity(context)
    timeout_s = time_left(request_deadline(context.settings.wait_timeout_s))
    try:
        if timeout_s <= 0:
            raise EmbeddingTimeout("the request's time is spent")
        result = context.broker.embed(body["input"], timeout_s, priority=priority)
    except EmbeddingTimeout:
        raise APIError(504, "timeout", f"no routing worker returned the embeddings within "
                       f"{context.settings.wait_timeout_s:g}s; retry later") from None
    except EmbeddingFailed as failure:
        raise APIError(502, "embedding_failed", f"the routing worker could not embed the input: {failure}") from None
    context.tenants.meter.record(key["id"] if key else None, requests=1, prompt_tokens=result["prompt_tokens"])
    return jsonify({
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encoded(vector, body["encoding_format"])}
                 for index, vector in enumerate(result["data"])],
        "model": result["model"],
        "usage": {"prompt_tokens": result["prompt_tokens"], "total_tokens": result["prompt_tokens"]},
    })


def document(spec: APISpec, secured: dict, settings: Optional[Settings] = None) -> None:
    """Describe `POST /v1/embeddings` in `spec` (webapp.openapi's build_spec), with `settings`' limits."""
    settings = settings or get_settings()
    spec.components.schema("EmbeddingRequest", schema=EmbeddingRequestSchema)
    limit = settings.embedding_max_inputs
    text = {"type": "string", "minLength": 1, "maxLength": settings.prompt_max_chars}
    spec.components.schemas["EmbeddingRequest"]["properties"]["input"]["oneOf"] = [
        text, {"type": "array", "minItems": 1, "maxItems": limit, "items": text}]
    item = {"type": "object", "required": ["object", "index", "embedding"], "properties": {
        "object": {"type": "string", "enum": ["embedding"]},
        "index": {"type": "integer"},
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}, "minItems": EMBEDDING_DIMENSIONS,
                                 "maxItems": EMBEDDING_DIMENSIONS},
                                {"type": "string", "format": "byte"}]}}}
    spec.components.schema("EmbeddingList", component={
        "type": "object", "required": ["object", "data", "model", "usage"], "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": item},
            "model": {"type": "string"},
            "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                                       "total_tokens": {"type": "integer"}}}}})
    errors = {str(status): {"description": "error (OpenAI's shape)",
                            "content": {"application/json": {"schema": "Error"}}}
              for status in (400, 401, 404, 413, 415, 429, 502, 503, 504)}
    spec.path("/v1/embeddings", operations={"post": {
        "summary": "OpenAI-compatible embeddings: 384-dimension unit vectors from the routing worker's embedder",
        "requestBody": {"required": True, "content": {"application/json": {"schema": "EmbeddingRequest"}}},
        **secured,
        "responses": {"200": {"description": "one vector per input, in order",
                              "content": {"application/json": {"schema": "EmbeddingList"}}}, **errors}}})
