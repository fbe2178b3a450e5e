"""`BudgetHistory`: the revisions in force at a time, whatever order the questions come in."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from schemas.budgets import BudgetSpec
from services.warehouse import history as h
from services.warehouse.history import BudgetHistory
from streams.budgets import Budget

SPEC = BudgetSpec.model_validate({"name": "b", "limits": {"total_tokens": 100}})


def _live(history: BudgetHistory, tenant: str, at_ms: int) -> list[tuple[str, int]]:
    return [(b.budget_id, b.revision) for b in history.at(tenant, at_ms).live(tenant)]


def test_a_revision_holds_from_its_time_until_the_next_and_retiring_ends_it() -> None:
    history = BudgetHistory()
    first = Budget("a", "t", 1, SPEC)
    history.add(first, 100)
    history.add(Budget("b", "t", 1, SPEC), 150)
    history.add(replace(first, revision=2), 200)
    history.add(replace(first, revision=3, retired=True), 300)
    assert _live(history, "t", 99) == []
    assert _live(history, "t", 100) == [("a", 1)]
    assert _live(history, "t", 199) == [("a", 1), ("b", 1)]
    assert _live(history, "t", 200) == [("a", 2), ("b", 1)]
    assert _live(history, "t", 10**15) == [("b", 1)]
    assert _live(history, "other", 10**15) == []
    assert [(b.budget_id, b.revision) for b in history.current()] == [("a", 3), ("b", 1)]


def test_a_time_before_the_previous_revision_is_raised_to_it() -> None:
    history = BudgetHistory()
    history.add(Budget("a", "t", 1, SPEC), 500)
    assert history.add(Budget("b", "t", 1, SPEC), 400) == 500  # another host's slower clock
    assert _live(history, "t", 450) == []
    assert _live(history, "t", 500) == [("a", 1), ("b", 1)]


changes = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 50)), max_size=30)


@given(changes, st.lists(st.integers(-5, 60), max_size=40), st.integers(1, 4))
def test_any_time_answers_as_folding_the_revisions_up_to_it(
    steps: list[tuple[str, int]], asks: list[int], cached: int
) -> None:
    kept, h.CACHED_INDEXES = h.CACHED_INDEXES, cached  # emptied often: answers must not change
    try:
        _check(steps, asks)
    finally:
        h.CACHED_INDEXES = kept


def _check(steps: list[tuple[str, int]], asks: list[int]) -> None:
    history = BudgetHistory()
    revisions: dict[str, int] = {}
    applied: list[tuple[int, Budget]] = []
    last = -1
    for budget_id, step in steps:
        revision = revisions.get(budget_id, 0) + 1
        revisions[budget_id] = revision
        last = max(last + step % 3, 0)  # non-decreasing, often equal
        budget = Budget(budget_id, "t", revision, SPEC, retired=step % 7 == 0)
        history.add(budget, last)
        applied.append((last, budget))
    for at in asks:
        expected: dict[str, Budget] = {}
        for when, budget in applied:
            if when <= at:
                expected[budget.budget_id] = budget
        live = sorted((b.budget_id, b.revision) for b in expected.values() if not b.retired)
        assert _live(history, "t", at) == live
