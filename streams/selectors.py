"""Which budgets a usage event charges.

A selector is compiled once per budget revision into a matcher (frozensets, only the dimensions
that are set), because the resolve stage asks every live budget of a tenant about every event.
Tenancy is not a selector dimension: `match_budgets` only ever looks at the event's own tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from schemas.budgets import Selector

if TYPE_CHECKING:
    from streams.budgets import Budget, BudgetIndex

_SCALAR_DIMENSIONS = ("team", "feature", "user", "virtual_key", "provider")


class UsageLike(Protocol):
    """The attribution fields a selector reads; `UsageRecorded` has them, so may a light view."""

    @property
    def tenant(self) -> str: ...
    @property
    def team(self) -> str | None: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def virtual_key(self) -> str | None: ...
    @property
    def provider(self) -> str | None: ...
    @property
    def request_model(self) -> str | None: ...
    @property
    def response_model(self) -> str | None: ...
    @property
    def tags(self) -> Sequence[str]: ...


Matcher = Callable[[UsageLike], bool]


def _match_all(event: UsageLike) -> bool:
    return True


def compile_selector(selector: Selector) -> Matcher:
    """A predicate equivalent to `matches(selector, ·)`, with the selector's sets built once."""
    checks = tuple(
        (name, frozenset(values))
        for name in _SCALAR_DIMENSIONS
        if (values := getattr(selector, name))
    )
    models = frozenset(selector.model)
    tags = frozenset(selector.tags)
    if not checks and not models and not tags:
        return _match_all

    def match(event: UsageLike) -> bool:
        for name, allowed in checks:
            if getattr(event, name) not in allowed:
                return False
        if models and event.request_model not in models and event.response_model not in models:
            return False
        return not tags or tags.issubset(event.tags)

    return match


def matches(selector: Selector, event: UsageLike) -> bool:
    """Whether `event` is inside `selector`: empty dimension = any, values of one dimension are
    alternatives, every selector tag must be on the event, `model` matches either model."""
    return compile_selector(selector)(event)


def match_budgets(index: BudgetIndex, event: UsageLike) -> list[Budget]:
    """The live budgets of `event.tenant` that `event` charges, ordered by budget id."""
    return [budget for budget in index.live(event.tenant) if budget.matcher(event)]
