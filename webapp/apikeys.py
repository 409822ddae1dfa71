"""Authentication: with `API_KEYS_REQUIRED=1` every API call carries a key (`tenants.keys` keeps them),
and the caller's key decides which jobs it may see."""
from __future__ import annotations

import re
from typing import Optional

from flask import Flask, g, request

from tenants.keys import KeyStore
from webapp.context import web
from webapp.errors import APIError

# What `tenants.keys` hands out: anything else is refused before Redis or SQL is asked (random
# tokens would each cost an SQL read otherwise).
KEY_SHAPE = re.compile(r"^llmq_[A-Za-z0-9_-]{43}$")
# Paths anyone may call: the probes, the API description and the playground and dashboard pages (they
# ask for a key; their data come from API calls that need one).
PUBLIC_PATHS = ("/", "/dashboard", "/health", "/ready", "/openapi.json")


def key_store() -> KeyStore:
    return web().tenants.keys


def _bearer_token() -> Optional[str]:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate() -> None:
    """Before each request: put the caller's key record in `g.api_key`, or answer 401."""
    if not web().settings.api_keys_required or request.path in PUBLIC_PATHS or request.path.startswith("/static/"):
        return
    token = _bearer_token()
    well_formed = token is not None and KEY_SHAPE.match(token)
    record, g.month_tokens = web().tenants.identify(token) if well_formed else (None, None)
    if record is None:
        message = "send a valid API key as 'Authorization: Bearer <key>'" if token is None else "invalid API key"
        raise APIError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    g.api_key = record


def caller_id() -> Optional[str]:
    """The caller's key id, or None without keys."""
    record = g.get("api_key")
    return record["id"] if record else None


def caller_owner() -> Optional[str]:
    """Whose jobs the caller may see: its key's id, or None for every job (an admin key, or no keys
    at all: then the service is open and jobs belong to nobody)."""
    record = g.get("api_key")
    return None if record is None or record.get("admin") else record["id"]


def may_see(job_record: dict) -> bool:
    """Whether the caller may read, follow or cancel the job."""
    owner = caller_owner()
    return owner is None or (job_record.get("request") or {}).get("key_id") == owner


def init_app(app: Flask) -> None:
    app.before_request(authenticate)
