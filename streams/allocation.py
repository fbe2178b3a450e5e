"""Allocation inside a tenant's budget tree: overflow pools, reservations, auto-rebalance.

A budget's *effective limit* in a period is what the ledger and the policy stage compare its
consumption with. For each metric it is

    base limit (spec) + overflow drawn + allocation received - allocation given
                      - reservations on it whose window starts later in the period

A parent's *overflow pool* is its unallocated part: its effective limit minus what its children
hold (their base limits plus what they drew, received or gave). Giving back to the parent (what
auto-rebalance does) therefore grows the pool, and a draw shrinks it; a reservation on a parent
keeps its tokens out of the pool until the window starts.

Everything here is pure: the tenant's live specs, the folded `AllocationState`, the period
window and the instant `at` are arguments. `streams.allocation_plans` checks wishes (draws,
reservations, rebalancing) against these numbers and returns the events to publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from schemas.allocation import (
    ALLOCATION_EVENTS,
    AllocationEvent,
    AllocationMoved,
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.budgets import BudgetSpec, Metric
from streams.allocation_tree import children_of
from streams.periods import period_of

Deltas = dict[str, dict[str, dict[str, int]]]
"""budget_id -> period_key -> metric -> tokens."""


class Window(Protocol):
    """A period instance: `streams.periods.PeriodWindow` satisfies it."""

    @property
    def key(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...


@dataclass(frozen=True)
class RebalanceRule:
    """When and how much under-used children give back; see `RebalanceRuleSet`."""

    enabled: bool = True
    at_fraction: float = 0.5
    under_percent: int = 50
    share_percent: int = 50
    tenant_cap_tokens: int | None = None


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    budget_id: str
    metric: str
    tokens: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class AllocationState:
    """A tenant's allocation facts folded: net deltas per budget and period, reservations."""

    delta: Deltas = field(default_factory=dict)
    drawn: Deltas = field(default_factory=dict)
    rebalanced: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    applied: frozenset[str] = frozenset()
    rule: RebalanceRule = RebalanceRule()

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "drawn": self.drawn,
            "rebalanced": self.rebalanced,
            "reservations": {
                k: {
                    **vars(r),
                    "starts_at": r.starts_at.isoformat(),
                    "ends_at": r.ends_at.isoformat(),
                }
                for k, r in self.reservations.items()
            },
            "applied": sorted(self.applied),
            "rule": vars(self.rule),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllocationState:
        reservations = {
            k: Reservation(
                **{
                    **r,
                    "starts_at": datetime.fromisoformat(r["starts_at"]),
                    "ends_at": datetime.fromisoformat(r["ends_at"]),
                }
            )
            for k, r in data["reservations"].items()
        }
        return cls(
            delta=data["delta"],
            drawn=data["drawn"],
            rebalanced=data["rebalanced"],
            reservations=reservations,
            applied=frozenset(data["applied"]),
            rule=RebalanceRule(**data["rule"]),
        )


def apply_allocation_event(state: AllocationState, event: AllocationEvent) -> AllocationState:
    """Fold one allocation event; an event whose key was already applied changes nothing."""
    if isinstance(event, RebalanceRuleSet):
        rule = RebalanceRule(
            event.enabled,
            event.at_fraction,
            event.under_percent,
            event.share_percent,
            event.tenant_cap_tokens,
        )
        return replace(state, rule=rule)
    key = _event_key(event)
    if key in state.applied:
        return state
    applied = state.applied | {key}
    if isinstance(event, OverflowDrawn):
        delta = _add(state.delta, event.budget_id, event.period_key, event.metric, event.tokens)
        drawn = _add(state.drawn, event.budget_id, event.period_key, event.metric, event.tokens)
        return replace(state, delta=delta, drawn=drawn, applied=applied)
    if isinstance(event, AllocationMoved):
        delta = _add(
            state.delta, event.from_budget_id, event.period_key, event.metric, -event.tokens
        )
        rebalanced = dict(state.rebalanced)
        if event.rule == "rebalance":
            rebalanced[event.period_key] = rebalanced.get(event.period_key, 0) + event.tokens
        return replace(state, delta=delta, rebalanced=rebalanced, applied=applied)
    if isinstance(event, ReservationMade):
        reservation = Reservation(
            event.reservation_id,
            event.budget_id,
            event.metric,
            event.tokens,
            event.starts_at,
            event.ends_at,
        )
        reservations = {**state.reservations, event.reservation_id: reservation}
        return replace(state, reservations=reservations, applied=applied)
    reservations = {k: r for k, r in state.reservations.items() if k != event.reservation_id}
    return replace(state, reservations=reservations, applied=applied)


def effective_limits(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    budget_id: str,
    window: Window,
    at: datetime,
) -> dict[Metric, int]:
    """The limits the ledger and the policy stage apply to `budget_id` at `at` (never below 0)."""
    spec = specs[budget_id]
    delta = state.delta.get(budget_id, {}).get(window.key, {})
    held = _reserved_ahead(state, budget_id, window, at)
    return {
        metric: max(0, limit + delta.get(metric, 0) - held.get(metric, 0))
        for metric, limit in spec.limits.by_metric().items()
    }


def effective_limits_at(
    specs: Mapping[str, BudgetSpec], state: AllocationState, budget_id: str, at: datetime
) -> dict[Metric, int]:
    """`effective_limits` in the budget's own period that contains `at`.

    The ledger calls this with a charge's latest event time and passes the result to
    `streams.ledger.apply_charge(..., effective_limits=...)`.
    """
    window = period_of(specs[budget_id].period, at)
    return effective_limits(specs, state, budget_id, window, at)


def pool(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    parent_id: str,
    window: Window,
    at: datetime,
) -> dict[Metric, int]:
    """The parent's unallocated tokens per metric it limits (negative when over-allocated)."""
    own = effective_limits(specs, state, parent_id, window, at)
    kids = children_of(specs, parent_id)
    result: dict[Metric, int] = {}
    for metric, limit in own.items():
        held = sum(_allocation(specs, state, kid, window.key).get(metric, 0) for kid in kids)
        result[metric] = limit - held
    return result


def unspent(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    budget_id: str,
    window: Window,
    at: datetime,
    consumed: Mapping[str, Mapping[str, int]],
) -> dict[Metric, int]:
    """Tokens `budget_id` may still give back or hold back in `window`, per metric (never < 0).

    `consumed[budget_id][metric]` is consumption in `window`. A leaf has its effective limit
    minus what it consumed. A parent has only its pool, less what it consumed beyond what its
    children consumed within their allocations (its own, direct use): tokens still allocated to
    a child are the child's, spent or not, so giving or holding them back would count them
    twice and push the pool below zero. Capped by the parent's own limit minus its consumption
    too, in case its selector does not cover its children's usage.
    """
    limits = effective_limits(specs, state, budget_id, window, at)
    used = consumed.get(budget_id, {})
    kids = children_of(specs, budget_id)
    allocations = [(kid, _allocation(specs, state, kid, window.key)) for kid in kids]
    result: dict[Metric, int] = {}
    for metric, limit in limits.items():
        free = limit - used.get(metric, 0)
        if kids:
            held = sum(a.get(metric, 0) for _, a in allocations)
            covered = sum(
                min(max(0, consumed.get(kid, {}).get(metric, 0)), max(0, a.get(metric, 0)))
                for kid, a in allocations
            )
            own = max(0, used.get(metric, 0) - covered)
            free = min(free, limit - held - own)
        result[metric] = max(0, free)
    return result


def _allocation(
    specs: Mapping[str, BudgetSpec], state: AllocationState, budget_id: str, period_key: str
) -> dict[str, int]:
    delta = state.delta.get(budget_id, {}).get(period_key, {})
    return {m: v + delta.get(m, 0) for m, v in specs[budget_id].limits.by_metric().items()}


def _reserved_ahead(
    state: AllocationState, budget_id: str, window: Window, at: datetime
) -> dict[str, int]:
    held: dict[str, int] = {}
    for r in state.reservations.values():
        if (
            r.budget_id == budget_id
            and at < r.starts_at
            and window.start <= r.starts_at < window.end
        ):
            held[r.metric] = held.get(r.metric, 0) + r.tokens
    return held


def _event_key(event: AllocationEvent) -> str:
    if isinstance(event, OverflowDrawn):
        return f"draw:{event.draw_id}"
    if isinstance(event, AllocationMoved):
        return f"move:{event.move_id}"
    if isinstance(event, ReservationMade):
        return f"reserve:{event.reservation_id}"
    if isinstance(event, ReservationReleased):
        return f"release:{event.reservation_id}"
    return f"rule:{event.occurred_at.isoformat()}"


def _add(deltas: Deltas, budget_id: str, period_key: str, metric: str, tokens: int) -> Deltas:
    periods = dict(deltas.get(budget_id, {}))
    metrics = dict(periods.get(period_key, {}))
    metrics[metric] = metrics.get(metric, 0) + tokens
    periods[period_key] = metrics
    return {**deltas, budget_id: periods}


class AllocationBook:
    """Every tenant's `AllocationState`, folded from config events in `budget-events` order.

    What a stage that applies limits keeps beside its budget index: feed it every event read
    from `budget-events` (events of other families are ignored), then ask `limits_at`.
    """

    def __init__(self) -> None:
        self.tenants: dict[str, AllocationState] = {}

    def apply(self, event: object) -> bool:
        """Fold `event` when it is an allocation event; returns whether it was one."""
        if not isinstance(event, ALLOCATION_EVENTS):
            return False
        allocation: AllocationEvent = event  # type: ignore[assignment]
        current = self.tenants.get(allocation.tenant, AllocationState())
        self.tenants[allocation.tenant] = apply_allocation_event(current, allocation)
        return True

    def state(self, tenant: str) -> AllocationState:
        return self.tenants.get(tenant, AllocationState())

    def limits_at(
        self, specs: Mapping[str, BudgetSpec], tenant: str, budget_id: str, at: datetime
    ) -> dict[Metric, int]:
        """The effective limits of `budget_id` at `at`; `specs` are the tenant's live budgets."""
        return effective_limits_at(specs, self.state(tenant), budget_id, at)
