"""The API's write side: check a wish against the rules, publish its event, fold it in.

Each command runs under its tenant's lock: check expected version and tree rules against
`ConfigState`, build the event with the key's principal as actor, publish it (acknowledged),
then apply it to the state. A failed publish changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime

from aiokafka.errors import KafkaError

from schemas.allocation import (
    AllocationMoved,
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.base import Event
from schemas.budgets import (
    BudgetAmended,
    BudgetDefined,
    BudgetRetired,
    BudgetSpec,
    Metric,
    Period,
)
from schemas.errors import AllotmentError, FieldError
from services.api.publisher import Publisher, PublishFailed
from services.api.state import ConfigState, load_state
from streams.allocation_plans import (
    check_reservation,
    plan_overflow_draw,
    plan_rebalance,
)
from streams.allocation_tree import AllocationRejected, check_retire, children_of, validate_tree
from streams.budgets import Budget
from streams.errors import BudgetNotFound
from streams.periods import period_of, rolling_keys

Consumption = Callable[[str, dict[str, str]], Awaitable[Mapping[str, Mapping[str, int]]]]
"""(tenant, {budget_id: period_key}) -> consumed[budget_id][metric], read from the read models."""


class VersionConflict(AllotmentError):
    """The write's expected version is not the budget's current one (HTTP 409)."""

    def __init__(self, budget_id: str, expected: int, actual: int) -> None:
        self.budget_id = budget_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"expected_version: budget {budget_id!r} is at version {actual}, not {expected}"
        )


class BudgetIdTaken(AllotmentError):
    """A budget id is used once, across tenants and after retirement (HTTP 409)."""

    def __init__(self, budget_id: str) -> None:
        self.budget_id = budget_id
        super().__init__(f"budget_id: {budget_id!r} is already taken")


class Commands:
    def __init__(self, state: ConfigState, publisher: Publisher) -> None:
        self.state = state
        self.publisher = publisher
        self._stale = False

    @contextlib.asynccontextmanager
    async def _locked(self, tenant: str) -> AsyncIterator[None]:
        """The tenant's lock, with the state re-read first if a failed write left it unsure."""
        async with self.state.locks[tenant]:
            if self._stale:
                await self._refresh()
            yield

    async def _refresh(self) -> None:
        """Start a fresh producer, fold `budget-events` again, bring the mirror up to it.

        Raises `PublishFailed` (503) while the broker cannot be read; the state stays marked
        stale, so no write is checked against it until a refresh succeeds.
        """
        self._stale = True
        try:
            await self.publisher.restart()
            fresh = await load_state(self.publisher.bootstrap, self.publisher.prefix)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishFailed(f"cannot re-read budget-events ({type(exc).__name__})") from None
        self.state.replace_with(fresh)
        self._stale = False
        with contextlib.suppress(AllotmentError, KafkaError, OSError, TimeoutError):
            await self.publisher.repair_mirror(self.state.latest)

    async def _commit(self, events: list[Event]) -> None:
        try:
            await self.publisher.publish(events)
        except PublishFailed:
            # The outcome is unknown (a write may have landed without its answer): re-read the
            # source of truth so the next version check is right.
            with contextlib.suppress(PublishFailed):
                await self._refresh()
            raise
        for event in events:
            self.state.apply(event)

    def _live(self, tenant: str, budget_id: str) -> Budget:
        budget = self.state.budget(tenant, budget_id)
        if budget is None or budget.retired:
            raise BudgetNotFound(budget_id)
        return budget

    async def define(
        self, actor: str, tenant: str, budget_id: str, spec: BudgetSpec, reason: str, at: datetime
    ) -> Budget:
        async with self._locked(tenant):
            if budget_id in self.state.index:
                raise BudgetIdTaken(budget_id)
            _check_tree({**self.state.specs(tenant), budget_id: spec}, budget_id)
            event = BudgetDefined(
                budget_id=budget_id,
                tenant=tenant,
                revision=1,
                occurred_at=at,
                actor=actor,
                reason=reason,
                spec=spec,
            )
            await self._commit([event])
            return self._live(tenant, budget_id)

    async def amend(
        self,
        actor: str,
        tenant: str,
        budget_id: str,
        expected: int,
        spec: BudgetSpec,
        reason: str,
        at: datetime,
    ) -> Budget:
        async with self._locked(tenant):
            current = self._live(tenant, budget_id)
            if current.revision != expected:
                raise VersionConflict(budget_id, expected, current.revision)
            _check_tree({**self.state.specs(tenant), budget_id: spec}, budget_id)
            event = BudgetAmended(
                budget_id=budget_id,
                tenant=tenant,
                revision=expected + 1,
                occurred_at=at,
                actor=actor,
                reason=reason,
                spec=spec,
            )
            await self._commit([event])
            return self._live(tenant, budget_id)

    async def retire(
        self, actor: str, tenant: str, budget_id: str, expected: int, reason: str, at: datetime
    ) -> Budget:
        async with self._locked(tenant):
            current = self._live(tenant, budget_id)
            if current.revision != expected:
                raise VersionConflict(budget_id, expected, current.revision)
            errors = check_retire(self.state.specs(tenant), budget_id)
            if errors:
                raise AllocationRejected(budget_id, errors)
            event = BudgetRetired(
                budget_id=budget_id,
                tenant=tenant,
                revision=expected + 1,
                occurred_at=at,
                actor=actor,
                reason=reason,
            )
            await self._commit([event])
            budget = self.state.budget(tenant, budget_id)
            if budget is None:
                raise BudgetNotFound(budget_id)
            return budget

    async def draw(
        self,
        actor: str,
        tenant: str,
        budget_id: str,
        metric: Metric,
        tokens: int,
        draw_id: str,
        reason: str,
        at: datetime,
        consumption: Consumption,
    ) -> OverflowDrawn:
        """Draw from the parent's pool: what it has not allocated and has not spent itself."""
        async with self._locked(tenant):
            budget = self._live(tenant, budget_id)
            if f"draw:{draw_id}" in self.state.book.state(tenant).applied:
                rule = "was already used in this tenant (a draw id is an idempotency key)"
                raise AllocationRejected(budget_id, [FieldError("draw_id", rule)])
            specs = self.state.specs(tenant)
            window = period_of(budget.spec.period, at)
            parent = budget.spec.parent
            ids = [] if parent is None else [parent, *children_of(specs, parent)]
            consumed = await _consumed_by_start(
                consumption, tenant, ids, budget.spec.period, at, at
            )
            event = plan_overflow_draw(
                specs,
                self.state.book.state(tenant),
                budget_id,
                window,
                at,
                consumed,
                metric=metric,
                tokens=tokens,
                draw_id=draw_id,
                tenant=tenant,
                actor=actor,
                reason=reason,
            )
            if event is None:  # only a partial draw returns None
                raise AllocationRejected(budget_id, [FieldError("tokens", "nothing to draw")])
            await self._commit([event])
            return event

    async def reserve(
        self, event: ReservationMade, at: datetime, consumption: Consumption
    ) -> ReservationMade:
        """Earmark tokens if the budget still has them: not allocated to children, not spent."""
        async with self._locked(event.tenant):
            budget = self._live(event.tenant, event.budget_id)
            specs = self.state.specs(event.tenant)
            window = period_of(budget.spec.period, event.starts_at)
            ids = [event.budget_id, *children_of(specs, event.budget_id)]
            consumed = await _consumed_by_start(
                consumption, event.tenant, ids, budget.spec.period, event.starts_at, at
            )
            check_reservation(
                specs, self.state.book.state(event.tenant), event, window, at, consumed
            )
            await self._commit([event])
            return event

    async def release(self, event: ReservationReleased) -> ReservationReleased:
        async with self._locked(event.tenant):
            self._live(event.tenant, event.budget_id)
            held = self.state.book.state(event.tenant).reservations.get(event.reservation_id)
            if held is None or held.budget_id != event.budget_id:
                raise AllocationRejected(
                    event.budget_id,
                    [FieldError("reservation_id", "names no open reservation of this budget")],
                )
            await self._commit([event])
            return event

    async def set_rule(self, event: RebalanceRuleSet) -> RebalanceRuleSet:
        async with self._locked(event.tenant):
            await self._commit([event])
            return event

    async def rebalance(
        self, actor: str, tenant: str, consumption: Consumption, at: datetime, reason: str
    ) -> list[AllocationMoved]:
        """Run auto-rebalance now for every period the tenant's budgets are in."""
        async with self._locked(tenant):
            specs = self.state.specs(tenant)
            windows = {bid: period_of(spec.period, at) for bid, spec in specs.items()}
            consumed = await consumption(tenant, {bid: w.key for bid, w in windows.items()})
            moves: list[AllocationMoved] = []
            # A tree shares one period (zone included), so each distinct window is one pass.
            for window in sorted(set(windows.values()), key=lambda w: (w.start, w.key)):
                same = {b: s for b, s in specs.items() if windows[b] == window}
                moves += plan_rebalance(
                    same,
                    self.state.book.state(tenant),
                    window,
                    at,
                    consumed,
                    tenant=tenant,
                    actor=actor,
                )
            moves = [
                AllocationMoved.parse({**m.to_wire(), "reason": f"{reason}; {m.reason}"[:2000]})
                for m in moves
            ]
            if moves:
                await self._commit(list(moves))
            return moves


async def _consumed_by_start(
    consumption: Consumption,
    tenant: str,
    ids: list[str],
    period: Period,
    starts_at: datetime,
    at: datetime,
) -> dict[str, dict[str, int]]:
    """What `ids` consumed so far in the period that `starts_at` falls in (children share it).

    For a rolling period that is the sum of the window's day buckets up to today; later days
    have no consumption yet.
    """
    today = period_of(period, at).key
    keys = [k for k in rolling_keys(period, starts_at) if k <= today]
    total: dict[str, dict[str, int]] = {}
    for key in keys:
        for budget_id, metrics in (await consumption(tenant, dict.fromkeys(ids, key))).items():
            into = total.setdefault(budget_id, {})
            for metric, tokens in metrics.items():
                into[metric] = into.get(metric, 0) + tokens
    return total


def _check_tree(specs: dict[str, BudgetSpec], budget_id: str) -> None:
    errors = validate_tree(specs, budget_id)
    if errors:
        raise AllocationRejected(budget_id, errors)
