"""The write side's view of configuration: every budget and each tenant's allocation state.

It is folded from the `budget-events` topic (the source of truth) when the API starts, and then
from each event this process publishes, after the broker acknowledged it. Writes check expected
versions and tree rules against it, not against the read models, so a write right after another
sees it even before the projection caught up.

Concurrency: one lock per tenant serialises a tenant's writes (the tree rules span a tenant,
so a per-budget lock would let two children over-allocate a parent together). This is correct
for ONE API process; the projection's revision check refuses a second writer's stale event, but
that writer would already have answered 2xx. Run one API process until writes are partitioned
by tenant (or fenced, e.g. by a lease in PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired, BudgetSpec
from schemas.codec import decode
from schemas.errors import AllotmentError
from schemas.topics import BUDGET_EVENTS
from services.common.kafka import read_from_start
from streams.allocation import AllocationBook
from streams.budgets import Budget, BudgetIndex, apply_budget_event


class ConfigState:
    """Budgets by id (all tenants) and allocation state per tenant, with per-tenant locks."""

    def __init__(self) -> None:
        self.index = BudgetIndex()
        self.book = AllocationBook()
        self.locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.latest: dict[str, Event] = {}
        """The latest applied lifecycle event of each budget (what the mirror must hold)."""
        self.skipped = 0

    def apply(self, event: Event) -> None:
        """Fold one config event; a replayed or refused one is counted and left out."""
        if isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
            try:
                budget = apply_budget_event(self.index.get(event.budget_id), event)
            except AllotmentError:
                self.skipped += 1
                return
            self.index = self.index.with_budget(budget)
            self.latest[event.budget_id] = event
        else:
            self.book.apply(event)

    def replace_with(self, other: ConfigState) -> None:
        """Take `other`'s budgets and allocations, keeping this object's locks."""
        self.index = other.index
        self.book = other.book
        self.latest = other.latest
        self.skipped = other.skipped

    def budget(self, tenant: str, budget_id: str) -> Budget | None:
        """The budget when it exists and belongs to `tenant` (another tenant's is invisible)."""
        budget = self.index.get(budget_id)
        return budget if budget is not None and budget.tenant == tenant else None

    def specs(self, tenant: str) -> dict[str, BudgetSpec]:
        """The tenant's live budgets, as the allocation rules take them."""
        return {b.budget_id: b.spec for b in self.index.for_tenant(tenant)}


async def load_state(bootstrap: str, prefix: str) -> ConfigState:
    """Fold `budget-events` from offset zero to its current end."""
    state = ConfigState()

    def fold(value: bytes | None) -> None:
        try:
            state.apply(decode(value or b""))
        except AllotmentError:
            state.skipped += 1

    await read_from_start(
        bootstrap,
        BUDGET_EVENTS.name(prefix),
        BUDGET_EVENTS.partitions,
        fold,
        isolation_level="read_committed",
    )
    return state
