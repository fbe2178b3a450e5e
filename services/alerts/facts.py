"""What the alerts service remembers about budgets: tree links (for the budget path) and the
latest state from the signal topics (for the policy in force and the projection).

Both are read models of topics, rebuilt by replaying them, and written in the consumer's
transaction together with its offsets.
"""

from __future__ import annotations

import orjson
from sqlalchemy import Connection, text

from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from services.alerts.payload import BudgetView


def apply_budget_event(conn: Connection, event: Event) -> None:
    """Record a budget's parent and name from the budgets topic (latest spec wins)."""
    if isinstance(event, BudgetDefined | BudgetAmended):
        conn.execute(
            text(
                "INSERT INTO alert_budgets (budget_id, tenant, parent, name) "
                "VALUES (:b, :t, :p, :n) ON CONFLICT (budget_id) DO UPDATE "
                "SET parent = EXCLUDED.parent, name = EXCLUDED.name"
            ),
            {"b": event.budget_id, "t": event.tenant, "p": event.spec.parent, "n": event.spec.name},
        )
    elif isinstance(event, BudgetRetired):
        pass  # a retired budget keeps its place in the tree: its alerts still need a path


def parents(conn: Connection, tenant: str) -> dict[str, str | None]:
    rows = conn.execute(
        text("SELECT budget_id, parent FROM alert_budgets WHERE tenant = :t"), {"t": tenant}
    )
    return {r.budget_id: r.parent for r in rows}


def load_view(conn: Connection, budget_id: str) -> BudgetView:
    row = conn.execute(
        text("SELECT name, view FROM alert_budgets WHERE budget_id = :b"), {"b": budget_id}
    ).first()
    if row is None:
        return BudgetView()
    view = BudgetView.from_dict(row.view or {})
    return BudgetView.from_dict({**view.to_dict(), "name": row.name or view.name})


def save_view(conn: Connection, tenant: str, budget_id: str, view: BudgetView) -> None:
    conn.execute(
        text(
            "INSERT INTO alert_budgets (budget_id, tenant, view) "
            "VALUES (:b, :t, CAST(:v AS jsonb)) "
            "ON CONFLICT (budget_id) DO UPDATE SET view = EXCLUDED.view"
        ),
        {"b": budget_id, "t": tenant, "v": orjson.dumps(view.to_dict()).decode()},
    )


def all_views(conn: Connection) -> dict[str, tuple[str, BudgetView]]:
    """budget_id -> (tenant, view) for every budget with a known state (for telemetry)."""
    rows = conn.execute(text("SELECT budget_id, tenant, name, view FROM alert_budgets"))
    result = {}
    for r in rows:
        view = BudgetView.from_dict({**(r.view or {}), "name": r.name or ""})
        result[r.budget_id] = (r.tenant, view)
    return result
