"""Allocation writes: overflow draws, reservations, the rebalance rule and a rebalance run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, status
from fastapi.concurrency import run_in_threadpool

from schemas.allocation import RebalanceRuleSet, ReservationMade, ReservationReleased
from services.api import queries
from services.api.commands import Consumption
from services.api.deps import NAME_PATTERN, BudgetPath, Services, Svc, TenantPath, Writer
from services.api.models import (
    Accepted,
    DrawOverflow,
    MakeReservation,
    ReleaseReservation,
    RunRebalance,
    SetRebalanceRule,
)
from services.api.routes_budgets import ERRORS

router = APIRouter(prefix="/v1/tenants/{tenant}", tags=["allocation"], responses=ERRORS)


@router.post("/budgets/{budget_id:path}/overflow-draws", status_code=status.HTTP_201_CREATED)
async def draw_overflow(
    tenant: TenantPath, budget_id: BudgetPath, body: DrawOverflow, caller: Writer, svc: Svc
) -> Accepted:
    """Draw from the parent's pool for the current period, within the budget's overflow cap.

    The pool is what the parent has neither allocated to its children nor spent itself.
    """
    event = await svc.commands.draw(
        caller.name,
        tenant,
        budget_id,
        body.metric,
        body.tokens,
        body.draw_id,
        body.reason,
        svc.clock(),
        read_consumption(svc),
    )
    return Accepted(events=[event.to_wire()])


@router.post("/budgets/{budget_id:path}/reservations", status_code=status.HTTP_201_CREATED)
async def make_reservation(
    tenant: TenantPath, budget_id: BudgetPath, body: MakeReservation, caller: Writer, svc: Svc
) -> Accepted:
    """Hold tokens of this budget back for a later date range of the period."""
    now = svc.clock()
    event = ReservationMade.parse(
        {
            "tenant": tenant,
            "budget_id": budget_id,
            "occurred_at": now,
            "actor": caller.name,
            **body.model_dump(),
        }
    )
    reserved = await svc.commands.reserve(event, now, read_consumption(svc))
    return Accepted(events=[reserved.to_wire()])


@router.post("/budgets/{budget_id:path}/reservations/{reservation_id}/release")
async def release_reservation(
    tenant: TenantPath,
    budget_id: BudgetPath,
    reservation_id: Annotated[str, Path(pattern=NAME_PATTERN, max_length=200)],
    body: ReleaseReservation,
    caller: Writer,
    svc: Svc,
) -> Accepted:
    event = ReservationReleased.parse(
        {
            "tenant": tenant,
            "budget_id": budget_id,
            "reservation_id": reservation_id,
            "occurred_at": svc.clock(),
            "actor": caller.name,
            "reason": body.reason,
        }
    )
    return Accepted(events=[(await svc.commands.release(event)).to_wire()])


@router.put("/rebalance-rule")
async def set_rebalance_rule(
    tenant: TenantPath, body: SetRebalanceRule, caller: Writer, svc: Svc
) -> Accepted:
    """When and how much under-used children give back to their parent's pool."""
    event = RebalanceRuleSet.parse(
        {"tenant": tenant, "occurred_at": svc.clock(), "actor": caller.name, **body.model_dump()}
    )
    return Accepted(events=[(await svc.commands.set_rule(event)).to_wire()])


@router.post("/rebalance")
async def run_rebalance(
    tenant: TenantPath, body: RunRebalance, caller: Writer, svc: Svc
) -> Accepted:
    """Apply the rebalance rule now (nothing moves before its point of the period).

    Usually the pipeline's timer does this; the endpoint lets an operator run it.
    """
    moves = await svc.commands.rebalance(
        caller.name, tenant, read_consumption(svc), svc.clock(), body.reason
    )
    return Accepted(events=[m.to_wire() for m in moves])


def read_consumption(svc: Services) -> Consumption:
    """Consumption per budget and period from the read models (up to the projection's lag).

    The one reader the allocation commands get, from a request or from the rebalance timer.
    """

    async def consumption(tenant: str, keys: dict[str, str]) -> Mapping[str, Mapping[str, int]]:
        return await run_in_threadpool(queries.consumption, svc.engine, tenant, keys)

    return consumption
