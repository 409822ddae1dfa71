"""`GET /openapi.json`: the API described by OpenAPI 3, its bodies generated from the marshmallow schemas."""
from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify
from marshmallow import INCLUDE, Schema, fields

from jobs.queues import TIERS
from jobs.status import JobStatus
from settings import Settings
from tenants.feedback import RATINGS
from webapp.context import web
from webapp import embeddings
from webapp.openai_schemas import ChatCompletionRequestSchema, CompletionRequestSchema
from webapp.schemas import FeedbackRequestSchema, JobRequestSchema, live_limits

bp = Blueprint("openapi", __name__)


class ErrorDetailSchema(Schema):
    """`code` names the error for programs, `message` explains it; some errors add fields."""

    class Meta:
        unknown = INCLUDE

    code = fields.String(required=True)
    message = fields.String(required=True)


class ErrorSchema(Schema):
    """Every error response."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class JobViewSchema(Schema):
    """A job as `GET /v1/jobs/<id>` shows it."""

    id = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": [status.value for status in JobStatus]})
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    finished_at = fields.String(metadata={"format": "date-time"})
    tier = fields.String()
    routing = fields.Dict(metadata={"description": "intent, tier, score, threshold, rule, top, language; `fallback` when it moved tier"})
    result = fields.Dict(metadata={"description": "response, model_used, tier, tokens, timings, `fallback`"})
    error = fields.Dict()
    links = fields.Dict()


class GenerateResponseSchema(Schema):
    """`POST /generate`: the answer of a finished job."""

    id = fields.String(required=True)
    response = fields.String(required=True)
    model_used = fields.String(required=True)
    latency_ms = fields.Float()
    intent = fields.String()
    score = fields.Float()
    cached = fields.Boolean()
    tier = fields.String()
    tokens = fields.Integer()
    routing = fields.Dict()


class UsageSchema(Schema):
    """`GET /v1/usage`: the caller's key's usage per UTC day, and its month against its budget."""

    key_id = fields.String(required=True)
    month = fields.Dict(required=True, metadata={"description": "month (YYYY-MM), tokens, budget, remaining"})
    days = fields.List(fields.Dict(), required=True, metadata={
        "description": "day, requests, prompt_tokens, completion_tokens, cache_hits, jobs_small, jobs_large"})


class FeedbackSchema(Schema):
    """`POST /v1/jobs/<id>/feedback`: the feedback as kept (the prompt is kept too, not shown)."""

    job_id = fields.String(required=True)
    rating = fields.String(required=True, metadata={"enum": list(RATINGS)})
    tier_wanted = fields.String(allow_none=True, metadata={"enum": list(TIERS)})
    comment = fields.String(allow_none=True)
    routed_tier = fields.String(allow_none=True)
    routed_intent = fields.String(allow_none=True)
    routed_score = fields.Float(allow_none=True)
    routed_rule = fields.String(allow_none=True)
    answered_tier = fields.String(allow_none=True)
    created_at = fields.Float(required=True, metadata={"description": "seconds since the epoch"})
    updated_at = fields.Float(required=True, metadata={"description": "seconds since the epoch"})
    replaced = fields.Boolean(required=True, metadata={"description": "true: it replaced the job's earlier feedback"})


class HealthSchema(Schema):
    """`GET /health`: 200 whenever the process answers (liveness)."""

    status = fields.String(required=True)


class ReadySchema(Schema):
    """`GET /ready`: 200 when Redis answers and every queue has a live worker with a stepping engine;
    503 (with `error`) otherwise."""

    status = fields.String(required=True, metadata={"enum": ["ready", "not_ready", "unavailable"]})
    redis = fields.Boolean(required=True)
    workers = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    hosts = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.List(fields.String())),
                        required=True, metadata={"description": "each queue's live workers (name@host) by host"})
    error = fields.Nested(ErrorDetailSchema)


def _errors(*statuses: int) -> dict:
    return {str(status): {"description": "error", "content": {"application/json": {"schema": "Error"}}}
            for status in statuses}


def _ok(status: int, schema: str, description: str) -> dict:
    return {str(status): {"description": description, "content": {"application/json": {"schema": schema}}}}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
JOB_BODY = {"required": True, "content": {"application/json": {"schema": "JobRequest"}}}
SUBMIT_ERRORS = (400, 401, 413, 415, 429, 503)


def build_spec(settings: Settings) -> dict:
    """The OpenAPI document for the app's current limits and settings."""
    spec = APISpec(title="LLM inference queue", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()])
    for name, schema in (("JobRequest", JobRequestSchema), ("Error", ErrorSchema), ("JobView", JobViewSchema),
                         ("GenerateResponse", GenerateResponseSchema), ("Usage", UsageSchema), ("Health", HealthSchema),
                         ("Ready", ReadySchema), ("FeedbackRequest", FeedbackRequestSchema),
                         ("Feedback", FeedbackSchema)):
        spec.components.schema(name, schema=schema)
    secured = {}
    if settings.api_keys_required:
        spec.components.security_scheme("apiKey", {"type": "http", "scheme": "bearer"})
        secured = {"security": [{"apiKey": []}]}
    spec.path("/v1/jobs", operations={"post": {
        "summary": "Queue a job", "requestBody": JOB_BODY, **secured,
        "responses": {**_ok(202, "JobView", "queued"), **_errors(*SUBMIT_ERRORS)}}})
    spec.path("/v1/jobs/{job_id}", parameters=[JOB_ID], operations={
        "get": {"summary": "A job's status and result", **secured,
                "responses": {**_ok(200, "JobView", "the job"), **_errors(401, 404, 503)}},
        "delete": {"summary": "Cancel a job", **secured,
                   "responses": {**_ok(200, "JobView", "cancelled"), **_errors(401, 404, 409, 503)}}})
    spec.path("/v1/jobs/{job_id}/feedback", parameters=[JOB_ID], operations={"post": {
        "summary": "Rate a succeeded job's answer; a second rating replaces the first", **secured,
        "requestBody": {"required": True, "content": {"application/json": {"schema": "FeedbackRequest"}}},
        "responses": {**_ok(201, "Feedback", "recorded"), **_ok(200, "Feedback", "replaced the earlier feedback"),
                      **_errors(400, 401, 404, 409, 413, 415, 429, 503)}}})
    spec.path("/generate", operations={"post": {
        "summary": "Queue a job and wait for its answer", "requestBody": JOB_BODY, **secured,
        "responses": {**_ok(200, "GenerateResponse", "the answer"), **_errors(*SUBMIT_ERRORS, 502, 504)}}})
    spec.path("/v1/usage", operations={"get": {
        "summary": "The caller's usage per day and its month's tokens against its budget", **secured,
        "parameters": [
            {"name": "days", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 366}},
            {"name": "key_id", "in": "query", "description": "another key's (admin keys only)",
             "schema": {"type": "string", "minLength": 1, "maxLength": 16}}],
        "responses": {**_ok(200, "Usage", "usage"), **_errors(400, 401, 403, 404, 429, 503)}}})
    _openai_paths(spec, secured, settings)
    spec.path("/health", operations={"get": {
        "summary": "Liveness: the process answers", "responses": _ok(200, "Health", "alive")}})
    spec.path("/ready", operations={"get": {
        "summary": "Readiness: Redis, and a live worker with a stepping engine on every queue",
        "responses": {**_ok(200, "Ready", "ready"), **_ok(503, "Ready", "not ready")}}})
    document = spec.to_dict()
    schemas = document["components"]["schemas"]
    for field, keywords in live_limits(settings).items():
        schemas["JobRequest"]["properties"][field].update(keywords)
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        schemas[name]["properties"]["max_tokens"].update(live_limits(settings)["max_tokens"])
    return document


OPENAI_ERRORS = (400, 401, 404, 413, 415, 429, 502, 503, 504)


def _openai_paths(spec: APISpec, secured: dict, settings: Settings) -> None:
    """The OpenAI-compatible endpoints: chat and legacy completions, models, embeddings."""
    for path, name, schema, summary in (
            ("/v1/chat/completions", "ChatCompletionRequest", ChatCompletionRequestSchema,
             "OpenAI chat completion (stream: true answers with Server-Sent Events)"),
            ("/v1/completions", "CompletionRequest", CompletionRequestSchema,
             "OpenAI legacy text completion: the prompt is continued with no chat template")):
        spec.components.schema(name, schema=schema)
        spec.path(path, operations={"post": {
            "summary": summary, **secured,
            "requestBody": {"required": True, "content": {"application/json": {"schema": name}}},
            "responses": {"200": {"description": "the completion (JSON), or its chunks (text/event-stream)",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(*OPENAI_ERRORS)}}})
    spec.path("/v1/models", operations={"get": {
        "summary": "The served models: one per tier, the routing aliases, the embedding model", **secured,
        "responses": {"200": {"description": "the models", "content": {"application/json": {
            "schema": {"type": "object"}}}}, **_errors(401, 429, 503)}}})
    embeddings.document(spec, secured, settings)


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(build_spec(web().settings))
