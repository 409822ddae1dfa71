"""API keys: kept in SQL, looked up through a Redis cache on every request.

A key is 32 random bytes, so a plain SHA-256 of it is enough to store (a slow, salted hash is for
guessable passwords); the key itself is shown once, when it is created. A lookup reads Redis first
(`tenants:key:<digest>`, for `cache_ttl_s`) and SQL only on a miss, so a Redis flush costs one SQL
read per key, never a key. A revoked or unknown key is cached as a tombstone, which a lookup
racing a revocation can never overwrite (it writes with NX).
"""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timezone
from typing import Optional

import redis
from sqlalchemy import Engine, insert, select, update

from tenants.schema import api_keys, audit_log

KEY_PREFIX = "llmq_"
CACHE_PREFIX = "tenants:key:"
UNKNOWN = b""  # the tombstone of a revoked or unknown key
UNKNOWN_TTL_S = 10  # a guessed key costs at most one SQL read per this long
OPTIONS = ("rate_limit", "admin", "max_in_flight", "max_priority", "monthly_token_budget")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def now() -> datetime:
    return datetime.now(timezone.utc)


def epoch(moment: Optional[datetime]) -> Optional[float]:
    """A database timestamp as seconds since the epoch (SQLite gives them back without a zone: UTC)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _record(row) -> dict:
    """The public record of a key row (never its digest)."""
    return {"id": row.id, "name": row.name, "created_at": epoch(row.created_at), "revoked_at": epoch(row.revoked_at),
            **{option: getattr(row, option) for option in OPTIONS}}


class KeyStore:
    """Create, list, revoke and look up API keys."""

    def __init__(self, engine: Engine, client: redis.Redis, cache_ttl_s: int = 300) -> None:
        self.engine = engine
        self.redis = client
        self.cache_ttl_s = cache_ttl_s

    def create(self, name: str, rate_limit: Optional[str] = None, admin: bool = False,
               max_in_flight: Optional[int] = None, max_priority: Optional[int] = None,
               monthly_token_budget: Optional[int] = None, actor: str = "operator") -> tuple[str, dict]:
        """A new key and its record; the key is not stored and cannot be shown again.

        An admin key may see and cancel every job; any other key only the jobs it created.
        `max_in_flight` caps the key's unfinished jobs, `max_priority` is its priority ceiling and
        `monthly_token_budget` the tokens (prompt and completion) it may use per calendar month (UTC).
        """
        key, key_id = KEY_PREFIX + secrets.token_urlsafe(32), secrets.token_hex(4)
        row = {"id": key_id, "digest": digest(key), "name": name, "created_at": now(), "revoked_at": None,
               "rate_limit": rate_limit, "admin": admin, "max_in_flight": max_in_flight,
               "max_priority": max_priority, "monthly_token_budget": monthly_token_budget}
        with self.engine.begin() as connection:
            connection.execute(insert(api_keys).values(**row))
            connection.execute(insert(audit_log).values(at=row["created_at"], actor=actor, action="key_created",
                                                        subject=key_id, detail=json.dumps({"name": name})))
        record = {**{k: v for k, v in row.items() if k != "digest"}, "created_at": epoch(row["created_at"])}
        self.redis.set(CACHE_PREFIX + row["digest"], json.dumps(record), ex=self.cache_ttl_s)
        return key, record

    def list(self, include_revoked: bool = False) -> list[dict]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query)]

    def get(self, key_id: str) -> Optional[dict]:
        """The record of the key with id `key_id` (revoked or not), or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _record(row) if row else None

    def revoke(self, key_id: str, actor: str = "operator") -> bool:
        """Revoke the key: every process refuses it from its next request on. False if no key has that id.

        Revoking a revoked key again redoes the Redis step (the tombstone), so a revocation that
        failed half way (SQL done, Redis away) can simply be repeated.
        """
        moment = now()
        with self.engine.begin() as connection:
            row = connection.execute(select(api_keys.c.digest, api_keys.c.revoked_at).where(
                api_keys.c.id == key_id)).first()
            if row is None:
                return False
            if row.revoked_at is None:
                connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=moment))
                connection.execute(insert(audit_log).values(at=moment, actor=actor, action="key_revoked",
                                                            subject=key_id))
        self.redis.set(CACHE_PREFIX + row.digest, UNKNOWN, ex=self.cache_ttl_s)
        return True

    def lookup(self, key: str) -> Optional[dict]:
        """The live key's record, or None for an unknown or revoked key: from Redis, else from SQL."""
        cache_key = CACHE_PREFIX + digest(key)
        cached = self.redis.get(cache_key)
        if cached is not None:
            return json.loads(cached) if cached != UNKNOWN else None
        with self.engine.connect() as connection:
            row = connection.execute(select(api_keys).where(
                api_keys.c.digest == digest(key), api_keys.c.revoked_at.is_(None))).first()
        record = _record(row) if row else None
        self.redis.set(cache_key, json.dumps(record) if record else UNKNOWN, nx=True,
                       ex=self.cache_ttl_s if record else UNKNOWN_TTL_S)
        return record
