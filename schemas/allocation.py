"""Allocation facts: how tokens move inside a tenant's budget tree.

A parent's unallocated part is its overflow pool. A child draws from it (`OverflowDrawn`), gives
unused allocation back to it (`AllocationMoved`, by hand or by the auto-rebalance rule), and any
budget may earmark tokens for a later date range (`ReservationMade` / `ReservationReleased`).
`RebalanceRuleSet` configures the tenant's auto-rebalance. Draws and moves hold for one period
(`period_key`); the budget's base limits in its `BudgetSpec` never change because of them.

Each event carries its own idempotency key (`draw_id`, `move_id`, `reservation_id`), so a replay
or a retried write never counts a move twice.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from schemas.base import (
    BudgetId,
    Event,
    Name,
    NonNegativeTokens,
    PositiveTokens,
    TenantId,
    UtcDatetime,
)
from schemas.budgets import Metric

MoveRule = Literal["rebalance", "manual"]


class _AllocationEvent(Event):
    tenant: TenantId
    occurred_at: UtcDatetime
    actor: Name
    reason: str = Field(default="", max_length=2000)


class OverflowDrawn(_AllocationEvent):
    """`budget_id` took `tokens` of `metric` from its parent's pool for one period.

    The child's effective limit in `period_key` rises by `tokens`; the sum of its draws in a
    period never exceeds its `overflow_cap_tokens`, nor what the pool held at the time.
    """

    TYPE: ClassVar[str] = "OverflowDrawn"
    VERSION: ClassVar[int] = 1
    type: Literal["OverflowDrawn"] = "OverflowDrawn"
    version: Literal[1] = 1

    draw_id: Name
    budget_id: BudgetId
    parent_id: BudgetId
    period_key: Name
    metric: Metric = "total"
    tokens: PositiveTokens


class AllocationMoved(_AllocationEvent):
    """`tokens` of `from_budget_id`'s allocation went back to its parent's pool for one period.

    `to_budget_id` is that parent. The giver's effective limit falls by `tokens` and the pool
    grows by as much; a sibling that needs them draws them (`OverflowDrawn`), so every move
    between children passes through the pool and its caps.
    """

    TYPE: ClassVar[str] = "AllocationMoved"
    VERSION: ClassVar[int] = 1
    type: Literal["AllocationMoved"] = "AllocationMoved"
    version: Literal[1] = 1

    move_id: Name
    from_budget_id: BudgetId
    to_budget_id: BudgetId
    period_key: Name
    metric: Metric = "total"
    tokens: PositiveTokens
    rule: MoveRule = "manual"

    @model_validator(mode="after")
    def _two_budgets(self) -> AllocationMoved:
        if self.from_budget_id == self.to_budget_id:
            raise ValueError("to_budget_id: must differ from from_budget_id")
        return self


class ReservationMade(_AllocationEvent):
    """`tokens` of `budget_id`'s limit are kept for the window `[starts_at, ends_at)`.

    Before the window starts (within the same period) the budget's effective limit is lower by
    `tokens`, so earlier consumption, and children's overflow draws, cannot eat into them.
    """

    TYPE: ClassVar[str] = "ReservationMade"
    VERSION: ClassVar[int] = 1
    type: Literal["ReservationMade"] = "ReservationMade"
    version: Literal[1] = 1

    reservation_id: Name
    budget_id: BudgetId
    metric: Metric = "total"
    tokens: PositiveTokens
    starts_at: UtcDatetime
    ends_at: UtcDatetime

    @model_validator(mode="after")
    def _ordered(self) -> ReservationMade:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at: must be after starts_at")
        return self


class ReservationReleased(_AllocationEvent):
    """The reservation no longer holds tokens back."""

    TYPE: ClassVar[str] = "ReservationReleased"
    VERSION: ClassVar[int] = 1
    type: Literal["ReservationReleased"] = "ReservationReleased"
    version: Literal[1] = 1

    reservation_id: Name
    budget_id: BudgetId


class RebalanceRuleSet(_AllocationEvent):
    """The tenant's auto-rebalance rule; the latest one wins.

    At `at_fraction` of each period, every child that used less than `under_percent` of its
    effective limit gives `share_percent` of its unused allocation back to its parent's pool;
    all moves of a tenant in one period add up to at most `tenant_cap_tokens` (None = no cap).
    """

    TYPE: ClassVar[str] = "RebalanceRuleSet"
    VERSION: ClassVar[int] = 1
    type: Literal["RebalanceRuleSet"] = "RebalanceRuleSet"
    version: Literal[1] = 1

    enabled: bool = True
    at_fraction: float = Field(default=0.5, gt=0, lt=1)
    under_percent: int = Field(default=50, gt=0, le=100)
    share_percent: int = Field(default=50, gt=0, le=100)
    tenant_cap_tokens: NonNegativeTokens | None = None


ALLOCATION_EVENTS: tuple[type[Event], ...] = (
    OverflowDrawn,
    AllocationMoved,
    ReservationMade,
    ReservationReleased,
    RebalanceRuleSet,
)
AllocationEvent = (
    OverflowDrawn | AllocationMoved | ReservationMade | ReservationReleased | RebalanceRuleSet
)
