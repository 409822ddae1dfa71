"""Request validation with marshmallow: unknown fields, wrong types and bad ranges are 400s."""
from __future__ import annotations

import os

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from tasks.delivery import DEFAULT_PRIORITY
from webapp.tokens import prompt_tokens


class StrictInteger(fields.Integer):
    """An integer that refuses booleans and numeric strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """true or false, not "yes", 1 or "false"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class StrictFloat(fields.Float):
    """A number that refuses booleans and numeric strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)


def prompt_max_chars() -> int:
    return int(os.environ.get("PROMPT_MAX_CHARS", "8000"))


def prompt_max_tokens() -> int:
    return int(os.environ.get("PROMPT_MAX_TOKENS", "2048"))


def max_tokens_limit() -> int:
    return int(os.environ.get("MAX_TOKENS_LIMIT", "1024"))


def live_limits() -> dict:
    """The configurable limits, as JSON Schema keywords per field (for the OpenAPI document)."""
    return {"prompt": {"maxLength": prompt_max_chars()}, "max_tokens": {"maximum": max_tokens_limit()}}


class JobRequestSchema(Schema):
    """Body of `POST /v1/jobs` and `POST /generate`."""

    class Meta:
        unknown = RAISE

    # The pattern (some non-space character) only documents the emptiness check below.
    prompt = fields.String(required=True, validate=validate.Length(min=1), metadata={"pattern": r"\S"})
    max_tokens = StrictInteger(load_default=128, validate=validate.Range(min=1))
    temperature = StrictFloat(load_default=0.0, validate=validate.Range(0.0, 2.0))
    tier = fields.String(load_default="auto", validate=validate.OneOf(["auto", "small", "large"]))
    priority = StrictInteger(load_default=DEFAULT_PRIORITY, validate=validate.Range(0, 9),
                             metadata={"description": "9 runs first"})
    cache = StrictBoolean(load_default=True)  # false: skip cached answers (the fresh one is still kept)

    @validates("prompt")
    def prompt_is_usable(self, value: str, **_) -> None:
        if not value.strip():
            raise ValidationError("Prompt must not be empty.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # JSON can carry lone surrogates, which are no text
            raise ValidationError("Prompt must be valid Unicode text.") from None
        if len(value) > prompt_max_chars():
            raise ValidationError(f"Prompt is longer than {prompt_max_chars()} characters.")
        if prompt_tokens(value) > prompt_max_tokens():
            raise ValidationError(f"Prompt is longer than {prompt_max_tokens()} tokens.")

    @validates("max_tokens")
    def max_tokens_within_limit(self, value: int, **_) -> None:
        if value > max_tokens_limit():
            raise ValidationError(f"Must be at most {max_tokens_limit()}.")
