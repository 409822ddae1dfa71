"""The audit log's fast path: an entry is queued in Redis and written to SQL with the next usage batch.

Key creation and revocation write their entries to SQL directly (they change SQL anyway).
"""
from __future__ import annotations

import json
import time
from typing import Optional

import redis
from redis.client import Pipeline

AUDIT_PENDING = "audit:pending"


def record_audit(client: redis.Redis, actor: str, action: str, subject: str, detail: Optional[dict] = None,
                 pipe: Optional[Pipeline] = None) -> None:
    """Queue an audit entry: `actor` (a key id, "operator") did `action` (e.g. job_cancelled) to `subject`."""
    entry = json.dumps({"at": time.time(), "actor": actor, "action": action, "subject": subject, "detail": detail})
    (pipe or client).rpush(AUDIT_PENDING, entry)
