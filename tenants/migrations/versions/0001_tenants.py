"""API keys, usage per key and day, the audit log and applied usage batches.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "jobs_small", "jobs_large")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("rate_limit", sa.String(100)),
        sa.Column("max_in_flight", sa.Integer),
        sa.Column("max_priority", sa.Integer),
        sa.Column("monthly_token_budget", sa.BigInteger),
    )
    op.create_table(
        "usage_daily",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in COUNTERS),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("audit_log_at", "audit_log", ["at"])
    op.create_table(
        "usage_batches",
        sa.Column("batch_id", sa.String(32), primary_key=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("usage_batches", "audit_log", "usage_daily", "api_keys"):
        op.drop_table(table)
