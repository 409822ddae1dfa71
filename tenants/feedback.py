"""Feedback on finished jobs, kept in SQL beside usage (`job_feedback`, migration 0002).

One row per job: a second rating replaces the first (its `created_at` stays, `updated_at` moves). A row
keeps what calibration needs once the job record has expired from Redis: the prompt the router saw and
the routing decision the job record carried when the feedback came (`routing.feedback` turns rows into
labelled prompts). Rows are kept until deleted (`delete_before`); nothing deletes them on its own.
Knows neither Flask nor Celery.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Engine, delete, select

from settings import TIERS
from tenants.keys import epoch, now
from tenants.ledger import _dialect_insert
from tenants.meter import NO_KEY
from tenants.schema import job_feedback

RATINGS = ("up", "down")
COMMENT_MAX_CHARS = 500  # the API's limit (webapp.schemas)
# Feedback keeps the prompt; PostgreSQL text cannot hold NUL, which JSON (and so a job's prompt) can.
_NUL = "\x00"


def routing_fields(record: dict) -> dict:
    """The routing decision of a job record as feedback keeps it: the tier the router chose (before any
    fallback moved the job), its intent, score and rule, and the tier that answered."""
    routing = record.get("routing") or (record.get("result") or {}).get("routing") or {}
    moved = routing.get("fallback") or {}
    score = routing.get("score")
    return {
        "routed_tier": moved.get("from") or routing.get("tier"),
        "routed_intent": routing.get("intent"),
        "routed_score": float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
        "routed_rule": routing.get("rule"),
        "answered_tier": (record.get("result") or {}).get("tier") or routing.get("tier") or record.get("tier"),
    }


class FeedbackStore:
    """Writes and reads `job_feedback` rows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, job_id: str, key_id: Optional[str], prompt: str, rating: str, routing: dict,
             tier_wanted: Optional[str] = None, comment: Optional[str] = None) -> tuple[dict, bool]:
        """Record (or replace) the job's feedback in one statement; the row and whether it replaced one."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be one of {RATINGS}")
        if tier_wanted is not None and tier_wanted not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}")
        at = now()
        values = {"key_id": key_id or NO_KEY, "rating": rating, "tier_wanted": tier_wanted, "comment": comment,
                  "prompt": prompt.replace(_NUL, "\ufffd"), "updated_at": at,
                  **{k: routing.get(k) for k in ("routed_tier", "routed_intent", "routed_score", "routed_rule",
                                                 "answered_tier")}}
        with self.engine.begin() as connection:
            statement = _dialect_insert(connection, job_feedback).values(job_id=job_id, created_at=at, **values)
            statement = statement.on_conflict_do_update(index_elements=["job_id"], set_=values)
            row = connection.execute(statement.returning(*job_feedback.c)).one()
        view = _view(row)
        return view, view["created_at"] != view["updated_at"]

    def get(self, job_id: str) -> Optional[dict]:
        with self.engine.connect() as connection:
            row = connection.execute(select(job_feedback).where(job_feedback.c.job_id == job_id)).first()
        return _view(row) if row is not None else None

    def entries(self, since: Optional[datetime] = None) -> list[dict]:
        """Every row (updated at or after `since`), oldest first: what calibration reads."""
        query = select(job_feedback).order_by(job_feedback.c.created_at, job_feedback.c.job_id)
        if since is not None:
            query = query.where(job_feedback.c.updated_at >= since)
        with self.engine.connect() as connection:
            return [_view(row) for row in connection.execute(query)]

    def delete_before(self, before: datetime) -> int:
        """Delete rows last updated before `before` (prompts included); how many went."""
        with self.engine.begin() as connection:
            return connection.execute(delete(job_feedback).where(job_feedback.c.updated_at < before)).rowcount


def _view(row) -> dict:
    data = dict(row._mapping)
    data["created_at"], data["updated_at"] = epoch(data["created_at"]), epoch(data["updated_at"])
    return data
