"""The API's read side: queries on the PostgreSQL read models, nothing else.

Every query takes the tenant and filters on it, so no read can return another tenant's rows
even when it names another tenant's budget id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select

from schemas.allocation import ALLOCATION_EVENTS, AllocationEvent
from schemas.budgets import BudgetSpec, Metric
from schemas.codec import from_dict
from services.warehouse import tables as t
from streams.allocation import AllocationState, apply_allocation_event, effective_limits, pool
from streams.allocation_tree import children_of
from streams.budgets import Budget
from streams.periods import period_of, rolling_keys

ALLOCATION_TYPES = [cls.TYPE for cls in ALLOCATION_EVENTS]
METRIC_COLUMNS: dict[Metric, str] = {
    "input": "input_tokens",
    "output": "output_tokens",
    "total": "total_tokens",
}


def _rows(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(stmt).mappings()]


def budgets(engine: Engine, tenant: str, include_retired: bool = False) -> list[Budget]:
    stmt = select(t.budgets).where(t.budgets.c.tenant == tenant).order_by(t.budgets.c.budget_id)
    if not include_retired:
        stmt = stmt.where(t.budgets.c.retired.is_(False))
    with engine.connect() as conn:
        return [Budget.from_dict(row) for row in _rows(conn, stmt)]


def budget(engine: Engine, tenant: str, budget_id: str) -> Budget | None:
    stmt = select(t.budgets).where(
        and_(t.budgets.c.tenant == tenant, t.budgets.c.budget_id == budget_id)
    )
    with engine.connect() as conn:
        rows = _rows(conn, stmt)
    return Budget.from_dict(rows[0]) if rows else None


def allocation_state(conn: Connection, tenant: str) -> AllocationState:
    """The tenant's allocation facts, folded from the audit log in log order."""
    stmt = (
        select(t.audit_log.c.payload)
        .where(t.audit_log.c.tenant == tenant, t.audit_log.c.event_type.in_(ALLOCATION_TYPES))
        .order_by(t.audit_log.c.topic, t.audit_log.c.partition, t.audit_log.c.offset)
    )
    state = AllocationState()
    for (payload,) in conn.execute(stmt):
        event: AllocationEvent = from_dict(payload)  # type: ignore[assignment]
        state = apply_allocation_event(state, event)
    return state


def status(engine: Engine, tenant: str, target: Budget, now: datetime) -> dict[str, Any]:
    """Consumption, effective limits, remaining, policy, forecast and history of one budget."""
    window = period_of(target.spec.period, now)
    with engine.connect() as conn:
        specs: dict[str, BudgetSpec] = {
            row["budget_id"]: BudgetSpec.model_validate(row["spec"])
            for row in _rows(
                conn,
                select(t.budgets.c.budget_id, t.budgets.c.spec).where(
                    t.budgets.c.tenant == tenant, t.budgets.c.retired.is_(False)
                ),
            )
        }
        specs[target.budget_id] = target.spec
        allocation = allocation_state(conn, tenant)
        limits = effective_limits(specs, allocation, target.budget_id, window, now)
        free = (
            pool(specs, allocation, target.budget_id, window, now)
            if children_of(specs, target.budget_id)
            else None
        )
        history = _rows(
            conn,
            select(t.period_usage)
            .where(
                t.period_usage.c.tenant == tenant, t.period_usage.c.budget_id == target.budget_id
            )
            .order_by(t.period_usage.c.period_key.desc()),
        )
        policy = _latest(conn, t.policies, tenant, target.budget_id, t.policies.c.effective_at)
        forecast = _latest(conn, t.forecasts, tenant, target.budget_id, t.forecasts.c.as_of)
    # A rolling budget's consumption is the sum of its day buckets in the window.
    keys = set(rolling_keys(target.spec.period, now))
    current = [h for h in history if h["period_key"] in keys]
    consumed = {m: sum(int(h[c]) for h in current) for m, c in METRIC_COLUMNS.items()}
    return {
        "budget_id": target.budget_id,
        "tenant": tenant,
        "revision": target.revision,
        "retired": target.retired,
        "period_key": window.key,
        "period_start": window.start,
        "period_end": window.end,
        "limits": target.limits,
        "effective_limits": limits,
        "consumed": consumed,
        "remaining": {m: limit - consumed[m] for m, limit in limits.items()},
        "pool": free,
        "policy": policy["payload"] if policy else None,
        "forecast": forecast["payload"] if forecast else None,
        "history": [
            {k: h[k] for k in ("period_key", *METRIC_COLUMNS.values(), "events")} for h in history
        ],
    }


def _latest(
    conn: Connection, table: Any, tenant: str, budget_id: str, order: Any
) -> dict[str, Any] | None:
    stmt = (
        select(table)
        .where(table.c.tenant == tenant, table.c.budget_id == budget_id)
        .order_by(order.desc())
        .limit(1)
    )
    rows = _rows(conn, stmt)
    return rows[0] if rows else None


def history(engine: Engine, table: Any, tenant: str, budget_id: str, order: Any) -> list[Any]:
    """Payloads of threshold crossings or policy changes, oldest first."""
    stmt = (
        select(table.c.payload)
        .where(table.c.tenant == tenant, table.c.budget_id == budget_id)
        .order_by(order)
    )
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(stmt)]


def audit(engine: Engine, tenant: str, budget_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The tenant's config events, newest first: who, when, what and why."""
    stmt = select(t.audit_log).where(t.audit_log.c.tenant == tenant)
    if budget_id is not None:
        stmt = stmt.where(t.audit_log.c.budget_id == budget_id)
    stmt = stmt.order_by(t.audit_log.c.occurred_at.desc(), t.audit_log.c.offset.desc())
    with engine.connect() as conn:
        return _rows(conn, stmt.limit(limit))


def daily(
    engine: Engine, tenant: str, budget_id: str, since: date | None, until: date | None
) -> list[dict[str, Any]]:
    stmt = select(t.daily_usage).where(
        t.daily_usage.c.tenant == tenant, t.daily_usage.c.budget_id == budget_id
    )
    if since is not None:
        stmt = stmt.where(t.daily_usage.c.day >= since)
    if until is not None:
        stmt = stmt.where(t.daily_usage.c.day <= until)
    order = (t.daily_usage.c.day, t.daily_usage.c.feature, t.daily_usage.c.model)
    with engine.connect() as conn:
        return _rows(conn, stmt.order_by(*order))


def consumption(engine: Engine, tenant: str, keys: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """consumed[budget_id][metric] in the given period of each budget."""
    if not keys:
        return {}
    stmt = select(t.period_usage).where(
        t.period_usage.c.tenant == tenant, t.period_usage.c.budget_id.in_(list(keys))
    )
    with engine.connect() as conn:
        rows = _rows(conn, stmt)
    return {
        row["budget_id"]: {m: int(row[c]) for m, c in METRIC_COLUMNS.items()}
        for row in rows
        if keys.get(row["budget_id"]) == row["period_key"]
    }
