"""Every budget revision the warehouse has seen, each in force from its record time on.

The pipeline charges a usage event to the budgets its resolve stage holds when it reads the
event (`streams.selectors.match_budgets` over the live budgets). The warehouse asks the same
function the same question, but about the budgets *in force at the usage record's time*: each
revision is in force from the Kafka record time of its `budget-events` record until the next
revision of that budget (a retirement ends it). The answer is then a function of the topics
alone, so a rebuild that reads all config before any usage (`consumer.py`) gives the live
state, and a budget retired or re-scoped later keeps the history it had.

Why record time: usage records carry the broker's append time (`schemas.topics.USAGE`), which is
when the pipeline could first see them, and so do `budget-events` records (both topics use
LogAppendTime), so the two are on one clock. Both are on the topics, so a replay reads the
same times. A tenant's config events share one partition (keyed by tenant), so their order is
the tenant's order; a record time earlier than the one before it (one written before the topic
was aligned, with its producer's clock) is raised to it, so a timeline never goes back.

Pure: no database, no clock. `projector.py` stores each revision (`budget_revisions`) and
loads them at start.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from streams.budgets import Budget, BudgetIndex

CACHED_INDEXES = 256
"""Past states kept per tenant: usage mostly meets the latest one, a rebuild walks forward."""

_EMPTY = BudgetIndex()


class _Timeline:
    """One tenant's revisions in the order they came into force."""

    __slots__ = ("cache", "current", "revisions", "times")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.revisions: list[Budget] = []
        self.current = _EMPTY
        self.cache: dict[int, BudgetIndex] = {}

    def add(self, budget: Budget, at_ms: int) -> int:
        at_ms = max(at_ms, self.times[-1]) if self.times else at_ms
        self.times.append(at_ms)
        self.revisions.append(budget)
        self.current = self.current.with_budget(budget)
        return at_ms

    def at(self, at_ms: int) -> BudgetIndex:
        count = bisect_right(self.times, at_ms)
        if count == len(self.times):
            return self.current
        if count == 0:
            return _EMPTY
        index = self.cache.get(count)
        if index is None:
            if len(self.cache) >= CACHED_INDEXES:
                self.cache.clear()
            index = self.cache[count] = BudgetIndex(_latest(self.revisions[:count]))
        return index


def _latest(revisions: Iterable[Budget]) -> Iterable[Budget]:
    """Each budget's highest revision among `revisions`."""
    latest: dict[str, Budget] = {}
    for budget in revisions:
        held = latest.get(budget.budget_id)
        if held is None or held.revision < budget.revision:
            latest[budget.budget_id] = budget
    return latest.values()


class BudgetHistory:
    """All revisions per tenant; `at(tenant, ms)` is the index `match_budgets` asks."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Timeline] = {}

    def add(self, budget: Budget, at_ms: int) -> int:
        """Put `budget` (the next revision of its budget) in force from `at_ms`; returns the
        time it is in force from (never before the tenant's previous revision)."""
        timeline = self._tenants.get(budget.tenant)
        if timeline is None:
            timeline = self._tenants[budget.tenant] = _Timeline()
        return timeline.add(budget, at_ms)

    def at(self, tenant: str, at_ms: int) -> BudgetIndex:
        """The tenant's budgets as they were at `at_ms` (retired ones are not live)."""
        timeline = self._tenants.get(tenant)
        return _EMPTY if timeline is None else timeline.at(at_ms)

    def current(self) -> BudgetIndex:
        """Every budget at its latest revision: what the next config event folds onto."""
        return BudgetIndex(b for t in self._tenants.values() for b in t.current)
