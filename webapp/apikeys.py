"""API keys: stored hashed in Redis, checked on every API call when `API_KEYS_REQUIRED=1`.

A key is 32 random bytes, so a plain SHA-256 of it is enough to store (a slow, salted hash is for
guessable passwords). Redis holds one hash, `api_keys`: SHA-256 hex -> JSON record; the key itself
is shown once, when it is created.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Optional

import redis
from flask import Flask, g, request

from webapp.context import web
from webapp.errors import APIError

KEYS_HASH = "api_keys"
KEY_PREFIX = "llmq_"
# Paths anyone may call: the probes and the API description.
PUBLIC_PATHS = ("/health", "/ready", "/openapi.json")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """Create, list, revoke and look up API keys."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def create(self, name: str, rate_limit: Optional[str] = None, admin: bool = False,
               max_in_flight: Optional[int] = None, max_priority: Optional[int] = None) -> tuple[str, dict]:
        """A new key and its record; the key is not stored and cannot be shown again.

        An admin key may see and cancel every job; any other key only the jobs it created.
        `max_in_flight` caps the key's jobs that have not ended; `max_priority` is its priority ceiling.
        """
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = {"id": secrets.token_hex(4), "name": name, "created_at": time.time(), "rate_limit": rate_limit,
                  "admin": admin, "max_in_flight": max_in_flight, "max_priority": max_priority}
        self.redis.hset(KEYS_HASH, _digest(key), json.dumps(record))
        return key, record

    def list(self) -> list[dict]:
        records = [json.loads(raw) for raw in self.redis.hvals(KEYS_HASH)]
        return sorted(records, key=lambda record: record["created_at"])

    def revoke(self, key_id: str) -> bool:
        for digest, raw in self.redis.hgetall(KEYS_HASH).items():
            if json.loads(raw)["id"] == key_id:
                return bool(self.redis.hdel(KEYS_HASH, digest))
        return False

    def lookup(self, key: str) -> Optional[dict]:
        raw = self.redis.hget(KEYS_HASH, _digest(key))
        return json.loads(raw) if raw else None


def key_store() -> ApiKeyStore:
    return ApiKeyStore(web().store.redis)


def _bearer_token() -> Optional[str]:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticate() -> None:
    """Before each request: put the caller's key record in `g.api_key`, or answer 401."""
    if not web().settings.api_keys_required or request.path in PUBLIC_PATHS:
        return
    token = _bearer_token()
    record = key_store().lookup(token) if token else None
    if record is None:
        message = "send a valid API key as 'Authorization: Bearer <key>'" if token is None else "invalid API key"
        raise APIError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    g.api_key = record


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
