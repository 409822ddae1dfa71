"""Bad input gets a 4xx with the JSON error shape and queues nothing."""
from __future__ import annotations

import json

import pytest

from helpers import app_with, broker, job_store

BAD_BODIES = [
    ("not json at all", 400, "invalid_request"),
    ("[1, 2]", 400, "invalid_request"),
    ('"a string"', 400, "invalid_request"),
    ("{}", 400, "invalid_request"),
    ('{"prompt": ""}', 400, "invalid_request"),
    ('{"prompt": "   \\n\\t "}', 400, "invalid_request"),
    ('{"prompt": 5}', 400, "invalid_request"),
    ('{"prompt": null}', 400, "invalid_request"),
    ('{"prompt": "hi", "max_tokens": 0}', 400, "invalid_request"),
    ('{"prompt": "hi", "max_tokens": 1025}', 400, "invalid_request"),
    ('{"prompt": "hi", "max_tokens": "5"}', 400, "invalid_request"),
    ('{"prompt": "hi", "max_tokens": true}', 400, "invalid_request"),
    ('{"prompt": "hi", "max_tokens": 2.5}', 400, "invalid_request"),
    ('{"prompt": "hi", "temperature": -0.1}', 400, "invalid_request"),
    ('{"prompt": "hi", "temperature": 2.5}', 400, "invalid_request"),
    ('{"prompt": "hi", "temperature": "hot"}', 400, "invalid_request"),
    ('{"prompt": "hi", "tier": "huge"}', 400, "invalid_request"),
    ('{"prompt": "hi", "unknown": 1}', 400, "invalid_request"),
]


def _queued_messages() -> int:
    """Messages waiting in every queue, at every priority."""
    return sum(broker().queue_depths(job_store()).values())


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/generate"])
@pytest.mark.parametrize("body,status,code", BAD_BODIES)
def test_bad_bodies_are_rejected_with_json_errors(client, path, body, status, code):
    before = _queued_messages()
    response = client.post(path, data=body, content_type="application/json")
    assert_json_error(response, status, code)
    assert _queued_messages() == before


def test_validation_errors_name_the_field(client):
    error = assert_json_error(client.post("/v1/jobs", json={"prompt": "hi", "max_tokens": 0}), 400, "invalid_request")
    assert "max_tokens" in error["fields"]


def test_wrong_content_type_is_415(client):
    response = client.post("/v1/jobs", data=json.dumps({"prompt": "hi"}), content_type="text/plain")
    assert_json_error(response, 415, "unsupported_media_type")


def test_body_over_the_cap_is_413(client, app):
    body = json.dumps({"prompt": "a" * (app.config["MAX_CONTENT_LENGTH"] + 10)})
    response = client.post("/v1/jobs", data=body, content_type="application/json")
    assert_json_error(response, 413, "payload_too_large")


def test_prompt_over_the_character_limit_is_400():
    response = app_with(prompt_max_chars=50).test_client().post("/v1/jobs", json={"prompt": "word " * 20})
    assert_json_error(response, 400, "invalid_request")


@pytest.mark.parametrize("job_id", ["nope", "0123456789abcdef0123456789abcdef", "../../etc/passwd"])
def test_unknown_job_is_404(client, job_id):
    assert_json_error(client.get(f"/v1/jobs/{job_id}"), 404, "not_found")


def test_unknown_route_and_method_are_json(client):
    assert_json_error(client.get("/no/such/page"), 404, "not_found")
    assert_json_error(client.delete("/generate"), 405, "method_not_allowed")
