"""A budget's status, its threshold and policy history, daily usage; the tenant's audit log."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.api import queries
from services.api.deps import BUDGET_PATTERN, BudgetPath, Reader, Svc, TenantPath
from services.api.models import AuditEntry, DailyRow, Status
from services.api.routes_budgets import ERRORS
from services.warehouse import tables as t
from streams.budgets import Budget
from streams.errors import BudgetNotFound

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["reads"], responses=ERRORS)


def _budget(svc: Svc, tenant: str, budget_id: str) -> Budget:
    found = queries.budget(svc.engine, tenant, budget_id)
    if found is None:
        raise BudgetNotFound(budget_id)
    return found


@router.get("/budgets/{budget_id:path}/status")
def budget_status(tenant: TenantPath, budget_id: BudgetPath, caller: Reader, svc: Svc) -> Status:
    """Consumed, effective limit, remaining, the policy in force, the latest forecast, and the
    consumption of every period seen."""
    target = _budget(svc, tenant, budget_id)
    return Status.model_validate(queries.status(svc.engine, tenant, target, svc.clock()))


@router.get("/budgets/{budget_id:path}/thresholds")
def threshold_history(
    tenant: TenantPath, budget_id: BudgetPath, caller: Reader, svc: Svc
) -> list[dict[str, Any]]:
    """Every threshold crossing of the budget (ThresholdCrossed events), oldest first."""
    _budget(svc, tenant, budget_id)
    return queries.history(svc.engine, t.thresholds, tenant, budget_id, t.thresholds.c.crossed_at)


@router.get("/budgets/{budget_id:path}/policies")
def policy_history(
    tenant: TenantPath, budget_id: BudgetPath, caller: Reader, svc: Svc
) -> list[dict[str, Any]]:
    """Every policy change of the budget (PolicyChanged events), oldest first."""
    _budget(svc, tenant, budget_id)
    return queries.history(svc.engine, t.policies, tenant, budget_id, t.policies.c.effective_at)


@router.get("/budgets/{budget_id:path}/usage/daily")
def daily_usage(
    tenant: TenantPath,
    budget_id: BudgetPath,
    caller: Reader,
    svc: Svc,
    since: date | None = None,
    until: date | None = None,
) -> list[DailyRow]:
    """Consumption per local day, feature and model (the finance warehouse's grain)."""
    _budget(svc, tenant, budget_id)
    rows = queries.daily(svc.engine, tenant, budget_id, since, until)
    return [DailyRow.model_validate(row) for row in rows]


@router.get("/audit")
def audit_log(
    tenant: TenantPath,
    caller: Reader,
    svc: Svc,
    budget_id: Annotated[str | None, Query(pattern=BUDGET_PATTERN, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    """Config events of the tenant, newest first: who, when, what and why."""
    rows = queries.audit(svc.engine, tenant, budget_id, limit)
    return [
        AuditEntry(
            occurred_at=row["occurred_at"],
            actor=row["actor"],
            event_type=row["event_type"],
            budget_id=row["budget_id"],
            revision=row["revision"],
            reason=row["reason"],
            event=row["payload"],
        )
        for row in rows
    ]
