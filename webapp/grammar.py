"""Structured output: a `response_format` turned into the GBNF grammar llama.cpp's sampler enforces.

The JSON schema is checked first (JSON Schema 2020-12, with `jsonschema`), then converted by
llama.cpp's own converter, the copy shipped in llama-cpp-python (`llama_cpp/llama_grammar.py`, which
uses only the standard library; it is loaded from its file, so the web process never loads libllama).
A schema that is invalid, that the converter cannot express, or whose grammar would be too large is
refused here, at the request, with the reason: never a job that fails or a worker that crashes.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
from types import ModuleType
from typing import Any

MAX_SCHEMA_CHARS = 20_000
# The converter writes `maxLength: N` (and `{m,N}` in a pattern, `maxItems: N`) as N nested optional
# groups, and llama.cpp parses grammars recursively: 50,000 crashed a worker (a stack overflow in
# llama_sampler_init_grammar), 10,000 was refused there. These bounds keep every schema far below.
MAX_REPEAT = 1000
MAX_GRAMMAR_CHARS = 100_000
REPEAT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
PATTERN_REPEAT = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")  # {n}, {m,n}, {,n}, {m,}; spaces too
MAX_GRAMMAR_DEPTH = 1500  # nested groups; llama.cpp refused between 1,000 and 5,000 (too many rules)
# A JSON string character as llama.cpp's current converter writes it. The copy in llama-cpp-python
# 0.3.36 admits raw control characters (`[^"\\]`), which JSON forbids inside strings: a model that
# wrote a newline in a string gave an answer that does not parse.
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def grammar_for(response_format: dict) -> str:
    """The GBNF grammar that admits only answers of `response_format` (any JSON object, or the schema's).

    Raises ValueError for a schema that is invalid, too large, or that llama.cpp's converter cannot express."""
    if response_format["type"] == "json_object":
        return _llama_grammar().JSON_GBNF
    try:  # keys in the schema's order: the converter has the model write properties in that order
        schema_json = json.dumps(response_format["json_schema"]["schema"])
    except RecursionError:
        raise ValueError("the JSON schema is nested too deeply") from None
    return _schema_grammar(schema_json)


@functools.lru_cache(maxsize=64)
def _schema_grammar(schema_json: str) -> str:
    if len(schema_json) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the JSON schema is longer than {MAX_SCHEMA_CHARS} characters")
    try:
        schema = json.loads(schema_json)
        check_json_schema(schema)
        check_repeats(schema)
        grammar = _llama_grammar().json_schema_to_gbnf(schema_json)
    except RecursionError:
        raise ValueError("the JSON schema is nested too deeply") from None
    except ValueError:
        raise
    except Exception as error:  # the converter asserts and raises on what it cannot express
        raise ValueError(f"the JSON schema cannot be turned into a grammar: {error or type(error).__name__}") \
            from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise ValueError(f"the JSON schema's grammar would be longer than {MAX_GRAMMAR_CHARS} characters")
    if grammar_depth(grammar) > MAX_GRAMMAR_DEPTH:
        raise ValueError(f"the JSON schema's grammar would nest more than {MAX_GRAMMAR_DEPTH} groups")
    return re.sub(r"^char ::= .*$", lambda _: JSON_CHAR_RULE, grammar, flags=re.MULTILINE)


def check_json_schema(schema: Any) -> None:
    """Raise ValueError unless `schema` is a valid JSON Schema (Draft 2020-12)."""
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        raise ValueError(f"not a valid JSON schema: {error.message}") from None


def check_repeats(schema: Any) -> None:
    """Raise ValueError when a length, count or pattern repetition anywhere in `schema` exceeds MAX_REPEAT."""
    if isinstance(schema, list):
        for item in schema:
            check_repeats(item)
        return
    if not isinstance(schema, dict):
        return
    for keyword, value in schema.items():
        if keyword in REPEAT_KEYWORDS and isinstance(value, int) and value > MAX_REPEAT:
            raise ValueError(f"{keyword} {value} is over {MAX_REPEAT}, the most a grammar can hold here")
        if keyword == "pattern" and isinstance(value, str):
            for low, high in PATTERN_REPEAT.findall(value):
                if max(int(low or 0), int(high or 0)) > MAX_REPEAT:
                    raise ValueError(f"a repetition in pattern {value!r} is over {MAX_REPEAT}")
        check_repeats(value)


def grammar_depth(grammar: str) -> int:
    """The deepest nesting of parentheses in a GBNF grammar, outside its "strings" and [classes]."""
    depth = deepest = 0
    closing, escaped = None, False
    for char in grammar:
        if closing:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == closing:
                closing = None
        elif char in "\"[":
            closing = "\"" if char == "\"" else "]"
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


@functools.lru_cache(maxsize=1)
def _llama_grammar() -> ModuleType:
    """llama-cpp-python's `llama_grammar.py`, loaded from its file: importing the `llama_cpp` package
    would load libllama and ggml into the web process (about 0.3 s of blocking import)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("structured output needs llama-cpp-python, which is not installed here")
    path = f"{list(spec.submodule_search_locations)[0]}/llama_grammar.py"
    module_spec = importlib.util.spec_from_file_location("llm_platform_llama_grammar", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
