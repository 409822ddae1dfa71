"""Request validation with marshmallow: unknown fields, wrong types and bad ranges are 400s.

The request limits (prompt characters and tokens, `max_tokens`) are checked here, once, for every
route that takes a prompt: the jobs API and the OpenAI-compatible API alike.
"""
from __future__ import annotations

from typing import Iterable, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from jobs.queues import DEFAULT_PRIORITY
from settings import Settings, get_settings
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


class LimitedSchema(Schema):
    """A request schema that applies the settings' request limits."""

    class Meta:
        unknown = RAISE

    def __init__(self, settings: Optional[Settings] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings or get_settings()

    def check_text(self, texts: Iterable[str], what: str) -> None:
        """Valid Unicode, and within the prompt's character and token limits all together."""
        texts = list(texts)
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # JSON can carry lone surrogates, which are no text
                raise ValidationError(f"{what} must be valid Unicode text.") from None
        limits = self.settings
        if sum(len(text) for text in texts) > limits.prompt_max_chars:
            raise ValidationError(f"{what} is longer than {limits.prompt_max_chars} characters.")
        if sum(prompt_tokens(text, limits) for text in texts) > limits.prompt_max_tokens:
            raise ValidationError(f"{what} is longer than {limits.prompt_max_tokens} tokens.")

    def check_max_tokens(self, value: Optional[int]) -> None:
        if value is not None and value > self.settings.max_tokens_limit:
            raise ValidationError(f"Must be at most {self.settings.max_tokens_limit}.")


def live_limits(settings: Settings) -> dict:
    """The configurable limits, as JSON Schema keywords per field (for the OpenAPI document)."""
    return {"prompt": {"maxLength": settings.prompt_max_chars}, "max_tokens": {"maximum": settings.max_tokens_limit}}


class JobRequestSchema(LimitedSchema):
    """Body of `POST /v1/jobs` and `POST /generate`."""

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
        self.check_text([value], "Prompt")

    @validates("max_tokens")
    def max_tokens_within_limit(self, value: int, **_) -> None:
        self.check_max_tokens(value)
