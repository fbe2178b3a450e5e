"""Budgets: create, amend, retire (writes, to Kafka); list, get and the tree (reads, from SQL)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool

from services.api import queries
from services.api.deps import BudgetPath, Reader, Svc, TenantPath, Writer
from services.api.models import (
    AmendBudget,
    BudgetOut,
    CreateBudget,
    ErrorBody,
    RetireBudget,
    Tree,
    TreeNode,
)
from streams.budgets import Budget
from streams.errors import BudgetNotFound

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["budgets"], responses=ERRORS)


def budget_out(budget: Budget) -> BudgetOut:
    return BudgetOut(
        budget_id=budget.budget_id,
        tenant=budget.tenant,
        version=budget.revision,
        retired=budget.retired,
        spec=budget.spec,
    )


@router.post("/budgets", status_code=status.HTTP_201_CREATED)
async def create_budget(
    tenant: TenantPath, body: CreateBudget, caller: Writer, svc: Svc
) -> BudgetOut:
    """Define a budget (version 1). 409 when the id is taken, 422 when a tree rule breaks."""
    budget = await svc.commands.define(
        caller.name, tenant, body.budget_id, body.spec, body.reason, svc.clock()
    )
    return budget_out(budget)


@router.put("/budgets/{budget_id:path}")
async def amend_budget(
    tenant: TenantPath, budget_id: BudgetPath, body: AmendBudget, caller: Writer, svc: Svc
) -> BudgetOut:
    """Replace the budget's spec. 409 when `expected_version` is not the current version."""
    budget = await svc.commands.amend(
        caller.name, tenant, budget_id, body.expected_version, body.spec, body.reason, svc.clock()
    )
    return budget_out(budget)


@router.post("/budgets/{budget_id:path}/retire")
async def retire_budget(
    tenant: TenantPath, budget_id: BudgetPath, body: RetireBudget, caller: Writer, svc: Svc
) -> BudgetOut:
    """Retire the budget (its history stays). 422 while it has live children."""
    budget = await svc.commands.retire(
        caller.name, tenant, budget_id, body.expected_version, body.reason, svc.clock()
    )
    return budget_out(budget)


@router.get("/budgets")
def list_budgets(
    tenant: TenantPath, caller: Reader, svc: Svc, include_retired: bool = False
) -> list[BudgetOut]:
    """The tenant's budgets as the read model holds them."""
    return [budget_out(b) for b in queries.budgets(svc.engine, tenant, include_retired)]


@router.get("/budgets/{budget_id:path}")
def get_budget(tenant: TenantPath, budget_id: BudgetPath, caller: Reader, svc: Svc) -> BudgetOut:
    found = queries.budget(svc.engine, tenant, budget_id)
    if found is None:
        raise BudgetNotFound(budget_id)
    return budget_out(found)


@router.get("/tree")
async def tree(tenant: TenantPath, caller: Reader, svc: Svc) -> Tree:
    """The tenant's live budgets as a tree (org -> team -> feature / key / user)."""
    live = await run_in_threadpool(queries.budgets, svc.engine, tenant)
    ids = {b.budget_id for b in live}
    nodes = {
        b.budget_id: TreeNode(
            budget_id=b.budget_id,
            name=b.spec.name,
            version=b.revision,
            limits={str(m): v for m, v in b.limits.items()},
        )
        for b in live
    }
    roots, orphans = [], []
    for b in live:
        if b.spec.parent is None:
            roots.append(nodes[b.budget_id])
        elif b.spec.parent in ids:
            nodes[b.spec.parent].children.append(nodes[b.budget_id])
        else:
            orphans.append(b.budget_id)
    return Tree(tenant=tenant, roots=roots, orphans=orphans)
