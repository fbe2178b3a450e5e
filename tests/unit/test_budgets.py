"""Folding budget configuration events; the budget index."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas.budgets import (
    BudgetAmended,
    BudgetDefined,
    BudgetRetired,
    BudgetSpec,
    Limits,
    Period,
)
from streams.budgets import Budget, BudgetIndex, apply_budget_event
from streams.errors import (
    BudgetAlreadyRetired,
    BudgetIdMismatch,
    BudgetNotFound,
    InvalidState,
    StaleRevision,
    TenantMismatch,
)

AT = datetime(2026, 11, 27, 12, tzinfo=UTC)
SPEC = BudgetSpec(name="copilot", limits=Limits(total_tokens=420_000_000))
BIGGER = BudgetSpec(name="copilot", limits=Limits(total_tokens=500_000_000, input_tokens=10))


def common(revision: int, **over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "budget_id": "b1",
        "tenant": "acme",
        "revision": revision,
        "occurred_at": AT,
        "actor": "ann",
    }
    fields.update(over)
    return fields


def test_define_amend_retire() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    assert (budget.revision, budget.retired, budget.limits) == (1, False, {"total": 420_000_000})
    budget = apply_budget_event(budget, BudgetAmended(spec=BIGGER, **common(2)))
    assert budget.revision == 2
    assert budget.limits == {"input": 10, "total": 500_000_000}
    budget = apply_budget_event(budget, BudgetRetired(**common(3)))
    assert (budget.revision, budget.retired, budget.spec) == (3, True, BIGGER)


def test_definition_must_be_revision_one() -> None:
    with pytest.raises(StaleRevision) as info:
        apply_budget_event(None, BudgetDefined(spec=SPEC, **common(2)))
    assert (info.value.current_revision, info.value.event_revision) == (None, 2)


def test_redefinition_is_stale() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    with pytest.raises(StaleRevision) as info:
        apply_budget_event(budget, BudgetDefined(spec=SPEC, **common(1)))
    assert info.value.already_applied


def test_replayed_amendment_is_stale_and_flagged_as_applied() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    budget = apply_budget_event(budget, BudgetAmended(spec=BIGGER, **common(2)))
    with pytest.raises(StaleRevision) as info:
        apply_budget_event(budget, BudgetAmended(spec=BIGGER, **common(2)))
    assert info.value.already_applied


def test_gap_in_revisions_is_stale_but_not_applied() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    with pytest.raises(StaleRevision) as info:
        apply_budget_event(budget, BudgetAmended(spec=BIGGER, **common(4)))
    assert not info.value.already_applied


def test_amending_nothing_is_not_found() -> None:
    with pytest.raises(BudgetNotFound) as info:
        apply_budget_event(None, BudgetAmended(spec=SPEC, **common(2)))
    assert info.value.budget_id == "b1"


def test_other_tenant_is_refused() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    with pytest.raises(TenantMismatch) as info:
        apply_budget_event(budget, BudgetAmended(spec=SPEC, **common(2, tenant="evil")))
    assert (info.value.budget_tenant, info.value.event_tenant) == ("acme", "evil")


def test_other_budget_is_refused() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    with pytest.raises(BudgetIdMismatch):
        apply_budget_event(budget, BudgetAmended(spec=SPEC, **common(2, budget_id="b2")))


def test_retired_budget_takes_no_more_events() -> None:
    budget = apply_budget_event(None, BudgetDefined(spec=SPEC, **common(1)))
    budget = apply_budget_event(budget, BudgetRetired(**common(2)))
    with pytest.raises(BudgetAlreadyRetired):
        apply_budget_event(budget, BudgetAmended(spec=SPEC, **common(3)))


def test_budget_round_trips_through_orjson() -> None:
    spec = BudgetSpec(
        name="n", limits=Limits(output_tokens=5), period=Period(kind="rolling", window_days=7)
    )
    budget = Budget("b1", "acme", 3, spec, retired=True)
    again = Budget.from_dict(orjson.loads(orjson.dumps(budget.to_dict())))
    assert again == budget
    assert again.limits == {"output": 5}


def test_bad_stored_budget_names_the_field() -> None:
    with pytest.raises(InvalidState) as info:
        Budget.from_dict({"budget_id": "b1", "tenant": "acme", "revision": 1})
    assert info.value.field == "spec"


def test_index_lists_live_budgets_per_tenant() -> None:
    live = Budget("b2", "acme", 1, SPEC)
    gone = Budget("b1", "acme", 2, SPEC, retired=True)
    other = Budget("b3", "other", 1, SPEC)
    index = BudgetIndex([live, gone, other])
    assert index.for_tenant("acme") == [live]
    assert index.get("b1") == gone
    assert index.get("nope") is None
    assert len(index) == 3
    assert "b3" in index


def test_with_budget_replaces_and_moves() -> None:
    first = Budget("b1", "acme", 1, SPEC)
    index = BudgetIndex([first, Budget("b0", "acme", 1, SPEC)])
    retired = replace(first, revision=2, retired=True)
    updated = index.with_budget(retired)
    assert [b.budget_id for b in updated.for_tenant("acme")] == ["b0"]
    assert [b.budget_id for b in index.for_tenant("acme")] == ["b0", "b1"]  # unchanged
    added = updated.with_budget(Budget("a9", "beta", 1, SPEC))
    assert [b.budget_id for b in added.for_tenant("beta")] == ["a9"]
    assert added.get("b1") == retired
