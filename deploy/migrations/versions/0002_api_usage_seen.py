"""Usage is deduplicated per event id (the pipeline's rule), not per (budget, event id).

One row per usage event instead of one per matched budget: the projection writes a sixth of the
rows when an event matches six budgets. Redeliveries cannot reach the projection anyway (its
offsets commit with its rows); this table only drops copies of an event at other offsets.

Revision ID: 0002_api_usage_seen
Revises: 0002_api_audit_topic
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_api_usage_seen"
down_revision: str | Sequence[str] | None = "0002_api_audit_topic"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("usage_seen", sa.Column("event_id", sa.Text(), primary_key=True))
    op.drop_table("usage_charged")


def downgrade() -> None:
    op.create_table(
        "usage_charged",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "event_id"),
    )
    op.drop_table("usage_seen")
