"""Warehouse: budget revisions with the time each came into force; usage ids with a time.

`budget_revisions` keeps every revision of every budget (retired ones included), in force from
its record time on `budget-events`: usage is matched against the revisions in force at its own
record time, so a rebuild equals the live state and retired or re-scoped budgets keep their
history (services/warehouse/history.py). `budgets` stays as it is (the latest revision, which
the API reads).

`usage_seen.first_seen_ms` is the record time of the sighting that counted: a re-used event id
counts again after the worker's dedupe window, as in the worker, and rows older than the window
are pruned (services/warehouse/seen.py).

Existing databases: each budget's current revision is copied in force since 1970, and each
existing id gets the time 2**62 (`streams.faust.dedupe_log.UNTIMED`: a duplicate forever,
never pruned). So the live projection goes on exactly as before; `allotment
rebuild-projections` then gives past usage its history and the ids their times.

Revision ID: 0002_api_budget_history
Revises: 0002_api_usage_seen
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002_api_budget_history"
down_revision: str | Sequence[str] | None = "0002_api_usage_seen"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNTIMED = 2**62


def upgrade() -> None:
    op.create_table(
        "budget_revisions",
        sa.Column("budget_id", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("spec", JSONB(), nullable=False),
        sa.Column("retired", sa.Boolean(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "revision"),
    )
    op.execute(
        "INSERT INTO budget_revisions (budget_id, revision, tenant, spec, retired, valid_from) "
        "SELECT budget_id, revision, tenant, spec, retired, to_timestamp(0) FROM budgets"
    )
    op.add_column(
        "usage_seen",
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False, server_default=str(UNTIMED)),
    )
    op.alter_column("usage_seen", "first_seen_ms", server_default=None)
    # BRIN: ids arrive about in record-time order, so a block range index finds the rows to
    # prune at a fraction of a B-tree's upkeep on every insert.
    op.create_index(
        "usage_seen_first_seen", "usage_seen", ["first_seen_ms"], postgresql_using="brin"
    )


def downgrade() -> None:
    op.drop_index("usage_seen_first_seen", table_name="usage_seen")
    op.drop_column("usage_seen", "first_seen_ms")
    op.drop_table("budget_revisions")
