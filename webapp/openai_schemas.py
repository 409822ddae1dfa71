"""OpenAI-compatible request validation and error shape for `/v1/chat/completions` and `/v1/models`."""
from __future__ import annotations

from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

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


class ChatCompletionRequestSchema(LimitedSchema):
    """Body of `POST /v1/chat/completions`: the subset of OpenAI's parameters this service honours."""

    model = fields.String(required=True, validate=validate.Length(min=1))
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=validate.Length(min=1))
    max_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = StrictInteger(allow_none=True, validate=validate.Range(min=1))  # newer clients' name
    temperature = StrictFloat(allow_none=True, validate=validate.Range(0.0, 2.0))
    stream = StrictBoolean(load_default=False)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    n = StrictInteger(validate=validate.Equal(1, error="Only n=1 is supported."))
    user = fields.String()

    @validates_schema
    def messages_are_usable(self, data: dict, **_) -> None:
        messages = data.get("messages") or []
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise ValidationError("At least one user message must have content.", "messages")
        try:
            self.check_text((m["content"] for m in messages), "The conversation")
        except ValidationError as error:
            raise ValidationError(error.messages, "messages") from None

    @validates("max_tokens", "max_completion_tokens")
    def max_tokens_within_limit(self, value: Optional[int], **_) -> None:
        self.check_max_tokens(value)


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
