"""Hostile input: schemathesis fuzzes the API from its own OpenAPI document.

Every response must be free of server errors, match the document, and carry every error in the
JSON error shape. Two runs: all operations with a routing queue limit of 0 (so valid jobs are
refused with 429 and nothing runs), then submissions that really queue (each job cancelled at once).
"""
from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

EXAMPLES = 100  # per operation and run; the file takes about a minute on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@schemathesis.check
def json_error_shape(ctx, response, case) -> None:
    """Every 4xx/5xx body is `{"error": {"code": str, "message": str, ...}}`."""
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)
            and error["message"]):
        raise AssertionError(f"{response.status_code} without the JSON error shape: {body!r}")
    return None


# Short prompts and answers: a job that a worker picks up before its cancel arrives stays cheap.
FUZZ_LIMITS = {"prompt_max_chars": 300, "max_tokens_limit": 2}


def _schema(**queue_limits):
    """The app's OpenAPI document, loaded (under the fuzz limits) when the tests are collected."""
    from helpers import app_with

    return schemathesis.openapi.from_wsgi("/openapi.json", app_with(**FUZZ_LIMITS, **queue_limits))


STATUSES: Counter = Counter()  # responses seen, by status


@pytest.fixture(scope="module", autouse=True)
def report_statuses():
    yield
    print(f"\nfuzzing: {sum(STATUSES.values())} requests, by status {dict(sorted(STATUSES.items()))}")


# /ready answers 503 by design while no worker runs (these tests start none); tests/test_probes.py covers it.
every_operation = _schema(routing_max_depth=0).exclude(path="/ready")
submissions = _schema().include(path="/v1/jobs", method="POST")
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                         database=None)


@every_operation.parametrize()
@FUZZ_SETTINGS
def test_fuzzed_requests_never_break_the_api(case):
    response = case.call_and_validate(checks=CHECKS, additional_checks=[json_error_shape])
    STATUSES[response.status_code] += 1


@submissions.parametrize()
@FUZZ_SETTINGS
def test_fuzzed_submissions_that_queue_never_break_the_api(case):
    response = case.call_and_validate(checks=CHECKS, additional_checks=[json_error_shape])
    STATUSES[response.status_code] += 1
    if response.status_code == 202:
        cancelled = case.operation.schema.app.test_client().delete(f"/v1/jobs/{response.json()['id']}")
        assert cancelled.status_code == 200


def test_openapi_document_follows_the_schemas_and_limits():
    from helpers import app_with

    document = app_with(max_tokens_limit=64).test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/generate", "/health"} <= set(document["paths"])
    assert set(document["paths"]["/v1/jobs/{job_id}"]) >= {"get", "delete"}
    request = document["components"]["schemas"]["JobRequest"]
    assert set(request["properties"]) == {"prompt", "max_tokens", "temperature", "tier", "priority", "cache", "n",
                                          "logprobs", "top_p", "top_k", "min_p", "presence_penalty",
                                          "frequency_penalty", "repetition_penalty", "seed", "stop",
                                          "response_format", "escalate"}
    assert request["required"] == ["prompt"] and request["additionalProperties"] is False
    assert request["properties"]["priority"]["minimum"] == 0 and request["properties"]["priority"]["maximum"] == 9
    assert request["properties"]["max_tokens"]["maximum"] == 64
