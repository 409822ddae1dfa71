"""Request validation with marshmallow: unknown fields, wrong types and bad ranges are 400s.

The request limits (prompt characters and tokens, `max_tokens`) are checked here, once, for every
route that takes a prompt: the jobs API and the OpenAI-compatible API alike.
"""
from __future__ import annotations

from typing import Iterable, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from jobs.queues import DEFAULT_PRIORITY, TIERS
from settings import Settings, get_settings
from tenants.feedback import COMMENT_MAX_CHARS, RATINGS
from webapp.fields import StrictBoolean, StrictFloat, StrictInteger
from webapp.sampling import (DEFAULT_MAX_TOKENS, MAX_N, MAX_TOP_LOGPROBS, SAMPLING_INPUTS, TEMPERATURE_RANGE,
                             SamplingFields, logprobs_field, sampling_job_fields)
from webapp.tokens import prompt_tokens

__all__ = ["FeedbackRequestSchema", "JobRequestSchema", "LimitedSchema", "StrictBoolean", "StrictFloat",
           "StrictInteger", "live_limits"]


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
            check_unicode(text, what)
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


class JobRequestSchema(LimitedSchema, SamplingFields):
    """Body of `POST /v1/jobs` and `POST /generate`: the prompt, and the sampling, stop and format
    fields of the OpenAI-compatible API (webapp.sampling)."""

    # The pattern (some non-space character) only documents the emptiness check below.
    prompt = fields.String(required=True, validate=validate.Length(min=1), metadata={"pattern": r"\S"})
    max_tokens = StrictInteger(load_default=DEFAULT_MAX_TOKENS, validate=validate.Range(min=1))
    temperature = StrictFloat(load_default=0.0, validate=validate.Range(*TEMPERATURE_RANGE))
    tier = fields.String(load_default="auto", validate=validate.OneOf(["auto", "small", "large"]))
    priority = StrictInteger(load_default=DEFAULT_PRIORITY, validate=validate.Range(0, 9),
                             metadata={"description": "9 runs first"})
    cache = StrictBoolean(load_default=True)  # false: skip cached answers (the fresh one is still kept)
    n = StrictInteger(load_default=1, validate=validate.Range(1, MAX_N),
                      metadata={"description": "answers to generate; the result lists them in `choices`"})
    logprobs = StrictInteger(allow_none=True, validate=validate.Range(0, MAX_TOP_LOGPROBS), metadata={
        "description": "return each token's log-probability with this many alternatives (0-5)"})
    escalate = StrictBoolean(metadata={"description": "false: a weak small-tier answer is not re-run on the large "
                                                      "tier (escalation, where ESCALATION arms it)"})

    @post_load
    def as_job(self, data: dict, **_) -> dict:
        """The job to queue: the prompt and its settings, sampling fields only where they change something."""
        job = {k: v for k, v in data.items() if k not in SAMPLING_INPUTS and k not in ("n", "logprobs", "escalate")}
        if data.get("escalate") is False:  # true is the default: the job carries the field only to opt out
            job["escalate"] = False
        if data["n"] > 1:
            job["n"] = data["n"]
        return {**job, **sampling_job_fields(data), **logprobs_field(data.get("logprobs"))}

    @validates("prompt")
    def prompt_is_usable(self, value: str, **_) -> None:
        if not value.strip():
            raise ValidationError("Prompt must not be empty.")
        self.check_text([value], "Prompt")

    @validates("max_tokens")
    def max_tokens_within_limit(self, value: int, **_) -> None:
        self.check_max_tokens(value)


def check_unicode(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry lone surrogates, which are no text
        raise ValidationError(f"{what} must be valid Unicode text.") from None


class FeedbackRequestSchema(Schema):
    """Body of `POST /v1/jobs/<id>/feedback`: a rating of the job's answer and, with `down`, the tier
    that should have answered."""

    class Meta:
        unknown = RAISE

    rating = fields.String(required=True, validate=validate.OneOf(RATINGS))
    tier = fields.String(validate=validate.OneOf(TIERS), metadata={
        "description": "with rating `down`: the tier that should have answered"})
    comment = fields.String(validate=validate.Length(max=COMMENT_MAX_CHARS))

    @validates("comment")
    def comment_is_text(self, value: str, **_) -> None:
        check_unicode(value, "Comment")
        if "\x00" in value:
            raise ValidationError("Comment must not contain NUL characters.")

    @validates_schema
    def tier_goes_with_down(self, data: dict, **_) -> None:
        if data.get("tier") is not None and data.get("rating") == "up":
            raise ValidationError("An `up` rating confirms the tier that answered; send `tier` only with `down`.",
                                  "tier")
