"""OpenAI-compatible request validation and error shape: `/v1/chat/completions`, `/v1/completions`
and `/v1/models`. The sampling, stop and format fields are shared with the jobs API (webapp.sampling)."""
from __future__ import annotations

from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from webapp.sampling import MAX_N, MAX_TOP_LOGPROBS, TEMPERATURE_RANGE, SamplingFields
from webapp.schemas import LimitedSchema, StrictBoolean, StrictFloat, StrictInteger

ROLES = ("system", "developer", "user", "assistant")
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class MessageContent(fields.Field):
    """A message's content: a string, or a list of text parts (`[{"type": "text", "text": ...}]`)."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(_is_text_part(part) for part in value):
            return "".join(part["text"] for part in value)
        raise ValidationError("Must be a string or a list of text parts.")


def _is_text_part(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


class MessageSchema(Schema):
    """One chat message."""

    class Meta:
        unknown = RAISE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(required=True)
    name = fields.String()


class StreamOptionsSchema(Schema):
    """`stream_options`: only `include_usage` means anything here."""

    class Meta:
        unknown = RAISE

    include_usage = StrictBoolean(load_default=False)


class OpenAIRequestSchema(LimitedSchema, SamplingFields):
    """What chat and legacy completions share: the model, the token budget, sampling, `n`, streaming."""

    model = fields.String(required=True, validate=validate.Length(min=1))
    max_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    temperature = StrictFloat(allow_none=True, validate=validate.Range(*TEMPERATURE_RANGE))
    n = StrictInteger(allow_none=True, validate=validate.Range(1, MAX_N))
    stream = StrictBoolean(load_default=False)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    escalate = StrictBoolean(allow_none=True, metadata={
        "description": "not OpenAI's: false never re-runs a weak small answer on large; a stream escalates "
                       "only when this is true (its text cannot be taken back)"})
    user = fields.String(allow_none=True)
    logit_bias = fields.Dict(allow_none=True, validate=validate.Length(max=0, error="logit_bias is not supported."),
                             metadata={"description": "accepted only empty (clients send {})"})

    @validates("max_tokens")
    def max_tokens_within_limit(self, value: Optional[int], **_) -> None:
        self.check_max_tokens(value)


class ChatCompletionRequestSchema(OpenAIRequestSchema):
    """Body of `POST /v1/chat/completions`: the subset of OpenAI's parameters this service honours."""

    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1))
    max_completion_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))  # newer clients' name
    logprobs = StrictBoolean(allow_none=True)
    top_logprobs = StrictInteger(allow_none=True, validate=validate.Range(0, MAX_TOP_LOGPROBS))

    @validates_schema
    def messages_are_usable(self, data: dict, **_) -> None:
        messages = data.get("messages") or []
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise ValidationError("At least one user message must have content.", "messages")
        try:
            self.check_text((m["content"] for m in messages), "The conversation")
        except ValidationError as error:
            raise ValidationError(error.messages, "messages") from None

    @validates_schema
    def top_logprobs_need_logprobs(self, data: dict, **_) -> None:
        if data.get("top_logprobs") is not None and not data.get("logprobs"):
            raise ValidationError("top_logprobs needs logprobs: true.", "top_logprobs")

    @validates("max_completion_tokens")
    def max_completion_tokens_within_limit(self, value: Optional[int], **_) -> None:
        self.check_max_tokens(value)


class CompletionRequestSchema(OpenAIRequestSchema):
    """Body of `POST /v1/completions`, the legacy text endpoint: the prompt is continued as it is (no
    chat template). One prompt per request; `suffix` and `best_of` > `n` are refused."""

    prompt = fields.Raw(required=True, metadata={"description": "a string, or a list holding one string",
                                                 "oneOf": [{"type": "string"},
                                                           {"type": "array", "items": {"type": "string"},
                                                            "minItems": 1, "maxItems": 1}]})
    logprobs = StrictInteger(allow_none=True, validate=validate.Range(0, MAX_TOP_LOGPROBS))
    echo = StrictBoolean(allow_none=True)
    best_of = StrictInteger(allow_none=True, validate=validate.Range(1, MAX_N))
    suffix = fields.String(allow_none=True, validate=validate.Length(max=0, error="suffix is not supported."))

    @validates("prompt")
    def prompt_is_one_text(self, value: Any, **_) -> None:
        text = value[0] if isinstance(value, list) and len(value) == 1 else value
        if not isinstance(text, str):
            raise ValidationError("Must be a string, or a list holding one string (token arrays and several "
                                  "prompts per request are not supported).")
        if not text.strip():
            raise ValidationError("Prompt must not be empty.")
        self.check_text([text], "Prompt")

    @validates_schema
    def echo_without_logprobs(self, data: dict, **_) -> None:
        if data.get("echo") and data.get("logprobs") is not None:
            raise ValidationError("echo with logprobs is not supported: the prompt's tokens have none here.", "echo")

    @validates_schema
    def best_of_is_n(self, data: dict, **_) -> None:
        if data.get("best_of") not in (None, 1, data.get("n") or 1):
            raise ValidationError("best_of must equal n: answers are not ranked here.", "best_of")


def last_user_message(messages: list[dict]) -> str:
    """What the router embeds: the newest user message with text in it."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user" and m["content"].strip())


def openai_error(status: int, error: dict) -> dict:
    """Turn this service's `{"code", "message", ...}` error into OpenAI's shape (extra keys kept)."""
    extra = {k: v for k, v in error.items() if k not in ("code", "message", "fields", "param")}
    fields_ = error.get("fields")
    param = error.get("param") or _first_field(fields_)
    message = error.get("message", "")
    if fields_:
        message = f"{message}: " + "; ".join(f"{path}: {text.rstrip('.')}" for path, text in _flatten(fields_))
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": error.get("code"), **extra}}


def _flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested error dict as (`messages[0].content`, text) pairs."""
    if isinstance(messages, dict):
        pairs = []
        for key, value in messages.items():
            # list indexes arrive as strings once the error has been through JSON
            step = f"[{key}]" if str(key).isdigit() else (f".{key}" if path else str(key))
            pairs += _flatten(value, path + step)
        return pairs
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path or "body", " ".join(messages))]
    return [(path or "body", str(messages))]


def _first_field(messages: Optional[dict]) -> Optional[str]:
    pairs = _flatten(messages) if messages else []
    return pairs[0][0] if pairs and pairs[0][0] not in ("body", "_schema") else None
