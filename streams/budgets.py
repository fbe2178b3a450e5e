"""A budget's current state, folded from its configuration events.

Revisions are the optimistic-concurrency check: each event must carry the next revision, so a
replayed event (`StaleRevision.already_applied`) or a lost one is visible instead of silently
merged. What the hot path needs from the spec (limits, thresholds, the selector's matcher) is
computed once per revision, when the `Budget` is built.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired, BudgetSpec, Metric
from streams.errors import (
    BudgetAlreadyRetired,
    BudgetIdMismatch,
    BudgetNotFound,
    InvalidState,
    StaleRevision,
    TenantMismatch,
)
from streams.selectors import Matcher, compile_selector

BudgetEvent = BudgetDefined | BudgetAmended | BudgetRetired


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget at one revision. `limits`, `thresholds` and `matcher` derive from `spec`."""

    budget_id: str
    tenant: str
    revision: int
    spec: BudgetSpec
    retired: bool = False
    limits: dict[Metric, int] = field(init=False, repr=False, compare=False)
    thresholds: tuple[int, ...] = field(init=False, repr=False, compare=False)
    matcher: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", self.spec.limits.by_metric())
        object.__setattr__(self, "thresholds", tuple(sorted(self.spec.thresholds)))
        object.__setattr__(self, "matcher", compile_selector(self.spec.selector))

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_id": self.budget_id,
            "tenant": self.tenant,
            "revision": self.revision,
            "spec": self.spec.model_dump(mode="json"),
            "retired": self.retired,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        try:
            spec = BudgetSpec.model_validate(data["spec"])
            return cls(
                budget_id=str(data["budget_id"]),
                tenant=str(data["tenant"]),
                revision=int(data["revision"]),
                spec=spec,
                retired=bool(data.get("retired", False)),
            )
        except KeyError as exc:
            raise InvalidState("Budget", str(exc.args[0]), "is required") from None
        except (ValidationError, TypeError, ValueError) as exc:
            raise InvalidState("Budget", "spec", str(exc)) from None


def apply_budget_event(current: Budget | None, event: BudgetEvent) -> Budget:
    """Fold one configuration event into the budget it concerns."""
    if current is not None:
        if current.budget_id != event.budget_id:
            raise BudgetIdMismatch(current.budget_id, event.budget_id)
        if current.tenant != event.tenant:
            raise TenantMismatch(current.budget_id, current.tenant, event.tenant)
    if isinstance(event, BudgetDefined):
        if current is not None or event.revision != 1:
            raise StaleRevision(
                event.budget_id, None if current is None else current.revision, event.revision
            )
        return Budget(event.budget_id, event.tenant, 1, event.spec, False)
    if current is None:
        raise BudgetNotFound(event.budget_id)
    if event.revision != current.revision + 1:
        raise StaleRevision(current.budget_id, current.revision, event.revision)
    if current.retired:
        raise BudgetAlreadyRetired(current.budget_id, current.revision)
    if isinstance(event, BudgetAmended):
        return replace(current, revision=event.revision, spec=event.spec)
    return replace(current, revision=event.revision, retired=True)


class BudgetIndex:
    """All known budgets, with the live ones of each tenant ready for the resolve stage.

    Immutable: `with_budget` returns a new index, so a reader never sees a half-updated one.
    """

    __slots__ = ("_by_id", "_live")

    def __init__(self, budgets: Iterable[Budget] = ()) -> None:
        self._by_id: dict[str, Budget] = {b.budget_id: b for b in budgets}
        live: dict[str, list[Budget]] = {}
        for budget in self._by_id.values():
            if not budget.retired:
                live.setdefault(budget.tenant, []).append(budget)
        self._live: dict[str, tuple[Budget, ...]] = {
            tenant: tuple(sorted(group, key=lambda b: b.budget_id))
            for tenant, group in live.items()
        }

    def for_tenant(self, tenant: str) -> list[Budget]:
        """The tenant's live (not retired) budgets, ordered by budget id."""
        return list(self._live.get(tenant, ()))

    def live(self, tenant: str) -> tuple[Budget, ...]:
        """`for_tenant` without the copy, for the hot path."""
        return self._live.get(tenant, ())

    def get(self, budget_id: str) -> Budget | None:
        """A budget by id, retired or not (its history stays readable)."""
        return self._by_id.get(budget_id)

    def with_budget(self, budget: Budget) -> BudgetIndex:
        """A new index where `budget` replaces the budget of the same id."""
        result = BudgetIndex.__new__(BudgetIndex)
        result._by_id = {**self._by_id, budget.budget_id: budget}
        result._live = dict(self._live)
        old = self._by_id.get(budget.budget_id)
        tenants = {budget.tenant} | ({old.tenant} if old is not None else set())
        for tenant in tenants:
            group = [b for b in self._live.get(tenant, ()) if b.budget_id != budget.budget_id]
            if budget.tenant == tenant and not budget.retired:
                group.append(budget)
            if group:
                result._live[tenant] = tuple(sorted(group, key=lambda b: b.budget_id))
            else:
                result._live.pop(tenant, None)
        return result

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Budget]:
        return iter(self._by_id.values())

    def __contains__(self, budget_id: object) -> bool:
        return budget_id in self._by_id
