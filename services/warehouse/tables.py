"""SQLAlchemy Core descriptions of the read-model tables of the 0002_api migration branch.

The migration owns the DDL; these mirror it for queries and writes. `PROJECTED` lists the tables
a rebuild empties and refills from the topics: everything here except `api_keys`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _tokens() -> list[Column[int]]:
    return [
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("total_tokens", BigInteger, nullable=False),
        Column("events", BigInteger, nullable=False),
    ]


budgets = Table(
    "budgets",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("parent_id", Text),
    Column("spec", JSONB, nullable=False),
    Column("retired", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", Text, nullable=False),
)

period_usage = Table(
    "period_usage",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("period_key", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    *_tokens(),
)

daily_usage = Table(
    "daily_usage",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("feature", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    *_tokens(),
)

budget_revisions = Table(
    "budget_revisions",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("revision", Integer, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("retired", Boolean, nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
)
"""Every revision of every budget, in force from `valid_from` (its record time on
`budget-events`) until the budget's next revision: usage is matched against the revisions in
force at its own record time (`history.py`), so retired and re-scoped budgets keep their usage."""

usage_seen = Table(
    "usage_seen",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("first_seen_ms", BigInteger, nullable=False),
)
"""Usage event ids projected within the pipeline's dedupe window (`seen.py`): a copy of an id
within the window is a duplicate, one after it counts again, as in the worker. `first_seen_ms`
is the record time of the sighting that counted; older rows are pruned."""

thresholds = Table(
    "thresholds",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("period_key", Text, primary_key=True),
    Column("metric", Text, primary_key=True),
    Column("threshold", Integer, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("crossed_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSONB, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("effective_at", DateTime(timezone=True), primary_key=True),
    Column("policy", Text, primary_key=True),
    Column("period_key", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
)

forecasts = Table(
    "forecasts",
    metadata,
    Column("budget_id", Text, primary_key=True),
    Column("period_key", Text, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("payload", JSONB, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("budget_id", Text),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("revision", Integer),
    Column("payload", JSONB, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("key_hash", Text, nullable=False),
    Column("principal", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("tenants", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

PROJECTED: list[Table] = [
    budgets,
    budget_revisions,
    period_usage,
    daily_usage,
    usage_seen,
    thresholds,
    policies,
    forecasts,
    audit_log,
]
