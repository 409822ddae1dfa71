"""Feedback on finished jobs: the rating, and the prompt and routing decision calibration learns from.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_feedback",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("rating", sa.String(8), nullable=False),
        sa.Column("tier_wanted", sa.String(8)),
        sa.Column("comment", sa.Text),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("routed_tier", sa.String(8)),
        sa.Column("routed_intent", sa.String(64)),
        sa.Column("routed_score", sa.Float),
        sa.Column("routed_rule", sa.String(16)),
        sa.Column("answered_tier", sa.String(8)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("job_feedback_created_at", "job_feedback", ["created_at"])
    op.create_index("job_feedback_key_id", "job_feedback", ["key_id"])


def downgrade() -> None:
    op.drop_table("job_feedback")
