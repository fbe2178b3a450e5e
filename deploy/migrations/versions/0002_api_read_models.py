"""The API's read models: budgets, usage per period and per day, thresholds, policies,
forecasts, the audit log of config events; and the API keys.

Every table but `api_keys` is a projection of Kafka topics and can be dropped and rebuilt from
offset zero (`allotment rebuild-projections`). Unique keys make each write idempotent. API keys
are credentials, not facts about budgets: they live only here and a rebuild keeps them.

Revision ID: 0002_api
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002_api"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOKENS = sa.BigInteger()


def _tokens() -> list[sa.Column]:
    return [
        sa.Column("input_tokens", TOKENS, nullable=False, server_default="0"),
        sa.Column("output_tokens", TOKENS, nullable=False, server_default="0"),
        sa.Column("total_tokens", TOKENS, nullable=False, server_default="0"),
        sa.Column("events", TOKENS, nullable=False, server_default="0"),
    ]


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("budget_id", sa.Text(), primary_key=True),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Text()),
        sa.Column("spec", JSONB(), nullable=False),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Text(), nullable=False),
    )
    op.create_table(
        "period_usage",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        *_tokens(),
        sa.PrimaryKeyConstraint("budget_id", "period_key"),
    )
    op.create_table(
        "daily_usage",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("feature", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        *_tokens(),
        sa.PrimaryKeyConstraint("budget_id", "day", "feature", "model"),
    )
    op.create_table(
        "usage_charged",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "event_id"),
    )
    op.create_table(
        "thresholds",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        sa.Column("crossed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "period_key", "metric", "threshold"),
    )
    op.create_table(
        "policies",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        sa.Column("payload", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "effective_at", "policy", "period_key"),
    )
    op.create_table(
        "forecasts",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("period_key", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "period_key"),
    )
    op.create_table(
        "audit_log",
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False, index=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("budget_id", sa.Text()),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revision", sa.Integer()),
        sa.Column("payload", JSONB(), nullable=False),
        sa.PrimaryKeyConstraint("partition", "offset"),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text(), primary_key=True),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("principal", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("tenants", JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    for table in (
        "api_keys",
        "audit_log",
        "forecasts",
        "policies",
        "thresholds",
        "usage_charged",
        "daily_usage",
        "period_usage",
        "budgets",
    ):
        op.drop_table(table)
