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


def apply_budget_event(conn: Connection, source: str, event: Event) -> None:
    """Record a budget's parent and name from the budgets topic (latest spec wins)."""
    if isinstance(event, BudgetDefined | BudgetAmended):
        conn.execute(
            text(
                "INSERT INTO alert_budgets (source, budget_id, tenant, parent, name) "
                "VALUES (:s, :b, :t, :p, :n) ON CONFLICT (source, budget_id) DO UPDATE "
                "SET parent = EXCLUDED.parent, name = EXCLUDED.name"
            ),
            {
                "s": source,
                "b": event.budget_id,
                "t": event.tenant,
                "p": event.spec.parent,
                "n": event.spec.name,
            },
        )
    elif isinstance(event, BudgetRetired):
        pass  # a retired budget keeps its place in the tree: its alerts still need a path


def ancestry(conn: Connection, source: str, budget_id: str) -> dict[str, str | None]:
    """Parent links from `budget_id` up to its root (at most 64 levels, so a cycle ends).

    Walks up in PostgreSQL, so the cost follows the depth of the tree, not the tenant's size.
    """
    rows = conn.execute(
        text(
            "WITH RECURSIVE up(budget_id, parent, depth) AS ("
            "SELECT budget_id, parent, 0 FROM alert_budgets WHERE source = :s AND budget_id = :b "
            "UNION ALL SELECT a.budget_id, a.parent, up.depth + 1 FROM alert_budgets a "
            "JOIN up ON a.budget_id = up.parent AND a.source = :s WHERE up.depth < 64) "
            "SELECT budget_id, parent FROM up"
        ),
        {"s": source, "b": budget_id},
    )
    return {r.budget_id: r.parent for r in rows}


def load_view(conn: Connection, source: str, budget_id: str) -> BudgetView:
    row = conn.execute(
        text("SELECT name, view FROM alert_budgets WHERE source = :s AND budget_id = :b"),
        {"s": source, "b": budget_id},
    ).first()
    if row is None:
        return BudgetView()
    view = BudgetView.from_dict(row.view or {})
    return BudgetView.from_dict({**view.to_dict(), "name": row.name or view.name})


def save_view(conn: Connection, source: str, tenant: str, budget_id: str, view: BudgetView) -> None:
    conn.execute(
        text(
            "INSERT INTO alert_budgets (source, budget_id, tenant, view) "
            "VALUES (:s, :b, :t, CAST(:v AS jsonb)) "
            "ON CONFLICT (source, budget_id) DO UPDATE SET view = EXCLUDED.view"
        ),
        {"s": source, "b": budget_id, "t": tenant, "v": orjson.dumps(view.to_dict()).decode()},
    )


def all_views(conn: Connection, source: str) -> dict[str, tuple[str, BudgetView]]:
    """budget_id -> (tenant, view) for every budget of `source` (to seed telemetry)."""
    rows = conn.execute(
        text("SELECT budget_id, tenant, name, view FROM alert_budgets WHERE source = :s"),
        {"s": source},
    )
    result = {}
    for r in rows:
        view = BudgetView.from_dict({**(r.view or {}), "name": r.name or ""})
        result[r.budget_id] = (r.tenant, view)
    return result
