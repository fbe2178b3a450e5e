"""Base revision: the offsets every projection stores beside its rows.

A projection reads a topic and writes read-model rows; it stores the next offset to read, per
(consumer, topic, partition), in the same transaction as those rows. After a crash it resumes
exactly where its committed rows end, so a replay neither loses nor doubles a row.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consumer_offsets",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "topic", "partition"),
    )


def downgrade() -> None:
    op.drop_table("consumer_offsets")
