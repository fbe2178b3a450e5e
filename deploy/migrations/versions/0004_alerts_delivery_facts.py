"""Alerts: what an alert delivery event needs that the outbox did not keep.

`AlertDelivered` / `AlertAbandoned` (schemas/alerts.py) carry the signal an alert came from
(its type, topic, partition and offset) and the times of the first and the latest attempt.
The columns are nullable: rows written before this revision have none of it, and a row that
was never claimed has no attempt times.

Revision ID: 0004_alerts_facts
Revises: 0003_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_alerts_facts"
down_revision = "0003_alerts"
branch_labels = None
depends_on = None

COLUMNS = (
    ("source_type", sa.Text),
    ("source_topic", sa.Text),
    ("source_partition", sa.Integer),
    ("source_offset", sa.BigInteger),
    ("first_attempt_at", sa.DateTime(timezone=True)),
    ("last_attempt_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("alert_outbox", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("alert_outbox", name)
