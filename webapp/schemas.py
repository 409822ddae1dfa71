"""Request validation with marshmallow: unknown fields, wrong types and bad ranges are 400s."""
from __future__ import annotations

import os

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates


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


class JobRequestSchema(Schema):
    """Body of `POST /v1/jobs` and `POST /generate`."""

    class Meta:
        unknown = RAISE

    prompt = fields.String(required=True)
    max_tokens = StrictInteger(load_default=128, validate=validate.Range(1, 1024))
    temperature = StrictFloat(load_default=0.0, validate=validate.Range(0.0, 2.0))
    tier = fields.String(load_default="auto", validate=validate.OneOf(["auto", "small", "large"]))
    cache = StrictBoolean(load_default=True)  # false: skip cached answers (the fresh one is still kept)

    @validates("prompt")
    def prompt_is_usable(self, value: str, **_) -> None:
        if not value.strip():
            raise ValidationError("Prompt must not be empty.")
        if len(value) > prompt_max_chars():
            raise ValidationError(f"Prompt is longer than {prompt_max_chars()} characters.")
