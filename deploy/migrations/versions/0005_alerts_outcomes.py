"""Alerts: delivery outcomes read back from `alert-deliveries`, so a rebuild sends nothing twice.

`alert_outcomes` holds, per alert id, the current outcome folded from the topic
(`services.alerts.outcomes.fold`), written by the consumer in the same transaction as its
offsets. An outbox row whose alert has an outcome there is final (delivered or failed, with the
recorded attempts and times) from the moment it is inserted, so an outbox rebuilt from the
topics after a database loss re-sends nothing the topic records as delivered or abandoned.

`alert_outbox.resent_after` is the last attempt time of the round a manual resend closed:
outcomes up to that time belong to earlier rounds and never end the resent one.

Revision ID: 0005_alerts_outcomes
Revises: 0004_alerts_facts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_alerts_outcomes"
down_revision = "0004_alerts_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_outcomes",
        sa.Column("source", sa.Text, primary_key=True),
        sa.Column("alert_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("event", postgresql.JSONB, nullable=False),
        sa.CheckConstraint("state IN ('delivered', 'failed')", name="alert_outcomes_state"),
    )
    op.add_column(
        "alert_outbox", sa.Column("resent_after", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("alert_outbox", "resent_after")
    op.drop_table("alert_outcomes")
