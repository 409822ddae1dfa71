"""The tables: API keys, usage per key and day, the audit log, the usage batches already applied, and
feedback on finished jobs."""
from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, DateTime, Float, Index, Integer, MetaData, String, Table, Text

# What is counted per key and day (GET /v1/usage, `flask usage`).
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "jobs_small", "jobs_large")

metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(16), primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),  # SHA-256 of the key; the key is never kept
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("admin", Boolean, nullable=False, default=False),
    Column("rate_limit", String(100)),
    Column("max_in_flight", Integer),
    Column("max_priority", Integer),
    Column("monthly_token_budget", BigInteger),
)

# No foreign key to api_keys: keyless jobs (keys off) are counted under the owner "-".
usage_daily = Table(
    "usage_daily", metadata,
    Column("key_id", String(16), primary_key=True),
    Column("day", Date, primary_key=True),
    *(Column(name, BigInteger, nullable=False, default=0) for name in COUNTERS),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),  # a key id, or "operator" for the command line
    Column("action", String(32), nullable=False),  # key_created, key_revoked, job_cancelled
    Column("subject", String(64), nullable=False),  # the key or job acted on
    Column("detail", Text),
)

# A batch of usage written through from Redis is applied once: its id is recorded in the same transaction.
usage_batches = Table(
    "usage_batches", metadata,
    Column("batch_id", String(32), primary_key=True),
    Column("applied_at", DateTime(timezone=True), nullable=False),
)

# Feedback on a finished job (`POST /v1/jobs/<id>/feedback`, tenants.feedback): one row per job, a second
# rating replaces the first. It keeps the prompt and the routing decision as the job record had them, so
# `python -m routing.calibrate --feedback` can learn from it after the job record has expired.
job_feedback = Table(
    "job_feedback", metadata,
    Column("job_id", String(32), primary_key=True),
    Column("key_id", String(16), nullable=False),  # the job's key ("-" for a job submitted without one)
    Column("rating", String(8), nullable=False),  # up | down
    Column("tier_wanted", String(8)),  # small | large: the tier that should have answered (with "down")
    Column("comment", Text),
    Column("prompt", Text, nullable=False),
    Column("routed_tier", String(8)),  # the router's decision, as the job record had it
    Column("routed_intent", String(64)),
    Column("routed_score", Float),
    Column("routed_rule", String(16)),  # matched | fallback | forced
    Column("answered_tier", String(8)),  # the tier that answered (another than routed_tier after a fallback)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("job_feedback_created_at", "created_at"),
    Index("job_feedback_key_id", "key_id"),
)
