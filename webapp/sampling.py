"""The sampling, stop and structured-output fields every generating route takes (the jobs API, chat
and completions alike): their limits, defined once here, and how they become job fields.

A job carries only the fields that change something (a neutral `top_p: 1` is dropped), so that
equal requests share cached answers. `response_format` becomes a GBNF grammar here
(webapp.grammar): a schema that cannot be one is a 400 now, not a failed job.
"""
from __future__ import annotations

from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from engines.features import NEUTRAL, unsupported
from engines.provider import backend_name
from settings import Settings
from webapp.fields import StrictFloat, StrictInteger
from webapp.grammar import grammar_for

DEFAULT_MAX_TOKENS = 128  # the jobs API's and chat's (OpenAI's chat has none; its legacy completions say 16)
TEMPERATURE_RANGE = (0.0, 2.0)
MAX_STOP = 4  # stop strings per request (OpenAI's limit)
MAX_STOP_CHARS = 200
MAX_N = 4  # answers per request
MAX_TOP_LOGPROBS = 5  # alternatives per token
MAX_TOP_K = 1000
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)
SCHEMA_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
# The request fields `sampling_job_fields` turns into job fields.
SAMPLING_INPUTS = (*NEUTRAL, "seed", "stop", "response_format")


class StopField(fields.Field):
    """`stop`: one string, or a list of up to MAX_STOP non-empty strings."""

    def _deserialize(self, value, attr, data, **kwargs) -> list[str]:
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ValidationError("Must be a string or a list of strings.")
        if len(stops) > MAX_STOP:
            raise ValidationError(f"At most {MAX_STOP} stop strings.")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValidationError(f"Each stop string must have 1 to {MAX_STOP_CHARS} characters.")
        return stops


class JsonSchemaSchema(Schema):
    """`response_format.json_schema`: OpenAI's name, description, schema and strict."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(SCHEMA_NAME))
    description = fields.String()
    schema = fields.Dict(required=True)
    strict = fields.Boolean(allow_none=True)  # always enforced here: the grammar admits nothing else


class ResponseFormatSchema(Schema):
    """`response_format`: `text` (default), `json_object`, or `json_schema` with its schema."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["text", "json_object", "json_schema"]))
    json_schema = fields.Nested(JsonSchemaSchema)

    @validates_schema
    def schema_given_for_json_schema(self, data: dict, **_) -> None:
        if (data["type"] == "json_schema") != ("json_schema" in data):
            raise ValidationError("`json_schema` is required with type json_schema, and only with it.", "json_schema")


class SamplingFields(Schema):
    """The fields shared by every route that generates; a subclass also sets `self.settings`."""

    settings: Settings

    top_p = StrictFloat(allow_none=True, validate=validate.Range(0.0, 1.0))
    top_k = StrictInteger(allow_none=True, validate=validate.Range(0, MAX_TOP_K),
                          metadata={"description": "0: off (not an OpenAI parameter; llama-server's)"})
    min_p = StrictFloat(allow_none=True, validate=validate.Range(0.0, 1.0),
                        metadata={"description": "not an OpenAI parameter; llama-server's"})
    presence_penalty = StrictFloat(allow_none=True, validate=validate.Range(-2.0, 2.0))
    frequency_penalty = StrictFloat(allow_none=True, validate=validate.Range(-2.0, 2.0))
    repetition_penalty = StrictFloat(allow_none=True, validate=validate.Range(0.0, 2.0, min_inclusive=False),
                                     metadata={"description": "1: off (llama-server's repeat_penalty)"})
    seed = StrictInteger(allow_none=True, validate=validate.Range(*SEED_RANGE),
                         metadata={"description": "same seed, prompt and settings: same answer"})
    stop = StopField(allow_none=True, metadata={
        "description": f"a string or up to {MAX_STOP} strings; the answer ends before the first one",
        "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP}]})
    response_format = fields.Nested(ResponseFormatSchema, allow_none=True)

    @validates_schema
    def backend_supports(self, data: dict, **_) -> None:
        """A field the configured engine cannot honour is refused now, naming the field."""
        given = sampling_job_fields(data, convert=False)
        for name, reason in unsupported(backend_name(self.settings)).items():
            if name in given:
                raise ValidationError(f"Not supported by this deployment's engine: {reason}.", name)

    @validates_schema
    def response_format_is_usable(self, data: dict, **_) -> None:
        response_format = data.get("response_format") or {}
        if response_format.get("type") in (None, "text"):
            return
        try:
            grammar_for(response_format)
        except ValueError as error:
            raise ValidationError(str(error), "response_format") from None


def sampling_job_fields(data: dict, convert: bool = True) -> dict:
    """The job fields for the request's sampling, stop and format fields: only those that change
    something, and `grammar` for a JSON response format (with `convert`)."""
    job: dict[str, Any] = {}
    for name, neutral in NEUTRAL.items():
        if data.get(name) is not None and data[name] != neutral:
            job[name] = data[name]
    if data.get("seed") is not None:
        job["seed"] = data["seed"]
    if data.get("stop"):
        job["stop"] = data["stop"]
    response_format = data.get("response_format") or {"type": "text"}
    if response_format["type"] != "text":
        job["response_format"] = response_format
        if convert:
            job["grammar"] = grammar_for(response_format)
    return job


def logprobs_field(alternatives: Optional[int]) -> dict:
    """The job's `logprobs` field: how many alternatives per token (absent: no log-probabilities)."""
    return {} if alternatives is None else {"logprobs": alternatives}
