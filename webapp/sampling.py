"""The sampling, stop and structured-output fields every generating route takes (the jobs API, chat
and completions alike): their limits, defined once here, and how they become job fields.

A job carries only the fields that change something (a neutral `top_p: 1` is dropped), so that
equal requests share cached answers. `response_format` becomes a GBNF grammar here, with
llama.cpp's own JSON-schema converter: a schema it cannot express is a 400 now, not a failed job.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Optional

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from engines.features import NEUTRAL, unsupported
from engines.provider import backend_name
from settings import Settings
from webapp.fields import StrictFloat, StrictInteger

MAX_STOP = 4  # stop strings per request (OpenAI's limit)
MAX_STOP_CHARS = 200
MAX_N = 4  # answers per request
MAX_TOP_LOGPROBS = 5  # alternatives per token
MAX_TOP_K = 1000
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)
SCHEMA_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_SCHEMA_CHARS = 20_000
# A JSON string character as llama.cpp's current converter writes it. The copy in llama-cpp-python
# 0.3.36 admits raw control characters (`[^"\\]`), which JSON forbids inside strings: a model that
# wrote a newline in a string gave an answer that does not parse.
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
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
        if response_format.get("type") != "json_schema":
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


def grammar_for(response_format: dict) -> str:
    """The GBNF grammar that admits only answers of `response_format` (any JSON object, or the schema's).

    Raises ValueError for a schema that is invalid or that llama.cpp's converter cannot express."""
    if response_format["type"] == "json_object":
        return _llama_grammar().JSON_GBNF
    schema = response_format["json_schema"]["schema"]
    return _schema_grammar(json.dumps(schema, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _schema_grammar(schema_json: str) -> str:
    if len(schema_json) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the JSON schema is longer than {MAX_SCHEMA_CHARS} characters")
    schema = json.loads(schema_json)
    check_json_schema(schema)
    try:
        grammar = _llama_grammar().json_schema_to_gbnf(schema_json)
    except Exception as error:  # the converter asserts and raises on what it cannot express
        raise ValueError(f"the JSON schema cannot be turned into a grammar: {error or type(error).__name__}") \
            from None
    return re.sub(r"^char ::= .*$", lambda _: JSON_CHAR_RULE, grammar, flags=re.MULTILINE)


def check_json_schema(schema: dict) -> None:
    """Raise ValueError unless `schema` is a valid JSON Schema (Draft 2020-12)."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ValueError(f"not a valid JSON schema: {error.message}") from None


def _llama_grammar() -> Any:
    """llama-cpp-python's grammar module (loaded on the first structured request; pure Python, though
    importing its package loads libllama into the process)."""
    try:
        from llama_cpp import llama_grammar
    except ImportError:
        raise ValueError("structured output needs llama-cpp-python, which is not installed here") from None
    return llama_grammar


def logprobs_field(alternatives: Optional[int]) -> dict:
    """The job's `logprobs` field: how many alternatives per token (absent: no log-probabilities)."""
    return {} if alternatives is None else {"logprobs": alternatives}
