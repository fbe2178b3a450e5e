"""Alerts: the delivery outbox and the budget facts alerts need (tree links, latest state).

The outbox's unique key (tenant, budget, period, kind, discriminator, channel) is what makes a
replay or a restart enqueue nothing twice; the consumed offsets go to the base revision's
`consumer_offsets` (consumer "alerts"), in the same transaction as the rows they produced.
`source` is the topic prefix that produced a row, so deployments (and tests) that share one
database never deliver each other's alerts.

Revision ID: 0003_alerts
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_alerts"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("delivery_id", sa.Text, nullable=False, unique=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("budget_id", sa.Text, nullable=False),
        sa.Column("period_key", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("discriminator", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("channel_type", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False, server_default="notify"),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint(
            "tenant",
            "budget_id",
            "period_key",
            "kind",
            "discriminator",
            "channel",
            name="alert_outbox_dedupe",
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'sending', 'delivered', 'failed', 'suppressed')",
            name="alert_outbox_state",
        ),
    )
    op.create_index(
        "alert_outbox_due",
        "alert_outbox",
        ["next_attempt_at"],
        postgresql_where=sa.text("state IN ('pending', 'sending')"),
    )
    op.create_index(
        "alert_outbox_budget", "alert_outbox", ["source", "budget_id", "channel", "event_at"]
    )
    op.create_table(
        "alert_budgets",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("budget_id", sa.Text, primary_key=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("parent", sa.Text, nullable=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("view", postgresql.JSONB, nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_table("alert_budgets")
    op.drop_index("alert_outbox_budget", table_name="alert_outbox")
    op.drop_index("alert_outbox_due", table_name="alert_outbox")
    op.drop_table("alert_outbox")
