"""The audit log's key names the topic too, so two deployments (topic prefixes) sharing one
database never take each other's (partition, offset) for a duplicate.

Revision ID: 0002_api_audit_topic
Revises: 0002_api
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_api_audit_topic"
down_revision: str | Sequence[str] | None = "0002_api"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("topic", sa.Text(), nullable=False, server_default=""))
    op.drop_constraint("audit_log_pkey", "audit_log", type_="primary")
    op.create_primary_key("audit_log_pkey", "audit_log", ["topic", "partition", "offset"])


def downgrade() -> None:
    op.drop_constraint("audit_log_pkey", "audit_log", type_="primary")
    op.drop_column("audit_log", "topic")
    op.create_primary_key("audit_log_pkey", "audit_log", ["partition", "offset"])
