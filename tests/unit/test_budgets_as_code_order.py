"""Budgets as code reaches any valid tree one accepted write at a time, or writes nothing.

Each write goes through the API's check of the tree right after it (`validate_tree`,
`check_retire`). These tests replay a plan with those same checks: every step must pass.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import BudgetSpec
from services.api import budgets_as_code as bac
from streams.allocation_tree import check_retire, validate_tree


def s(name: str, total: int, parent: str | None = None, kind: str = "month") -> BudgetSpec:
    return BudgetSpec.model_validate(
        {
            "name": name,
            "limits": {"total_tokens": total},
            "parent": parent,
            "period": {"kind": kind, "timezone": "UTC"},
        }
    )


def live_of(specs: dict[str, BudgetSpec]) -> dict[str, tuple[int, BudgetSpec]]:
    return {b: (3, spec) for b, spec in specs.items()}


def replay(live: dict[str, BudgetSpec], changes: list[bac.Change]) -> dict[str, BudgetSpec]:
    """Apply the plan as the API would, failing at the first write it refuses."""
    tree = dict(live)
    for change in changes:
        if change.spec is None:
            assert check_retire(tree, change.budget_id) == [], change.budget_id
            del tree[change.budget_id]
        else:
            tree[change.budget_id] = change.spec
            assert validate_tree(tree, change.budget_id) == [], change.budget_id
    return tree


def test_a_tree_shrinks_children_first() -> None:
    live = {"org": s("org", 1000), "team": s("team", 800, "org")}
    desired = {"org": s("org", 500), "team": s("team", 400, "org")}
    changes = bac.plan(desired, live_of(live))
    assert [c.budget_id for c in changes] == ["team", "org"]
    assert replay(live, changes) == desired


def test_a_mixed_plan_frees_room_before_it_uses_it() -> None:
    live = {
        "org": s("org", 1000),
        "team": s("team", 600, "org"),
        "old": s("old", 300, "org"),
        "search": s("search", 500, "team"),
    }
    desired = {
        "org": s("org", 900),  # shrinks
        "team": s("team", 800, "org"),  # grows into what "old" and org's cut leave
        "search": s("search", 700, "team"),  # grows, needs team first
        "chat": s("chat", 100, "org"),  # new
    }
    changes = bac.plan(desired, live_of(live), prune=True)
    assert replay(live, changes) == desired
    assert [c.action for c in changes].count("retire") == 1


def test_an_invalid_final_tree_is_refused_before_any_write() -> None:
    live = {"org": s("org", 1000), "team": s("team", 800, "org")}
    desired = {"org": s("org", 500), "team": s("team", 600, "org")}
    with pytest.raises(bac.PlanRejected) as err:
        bac.plan(desired, live_of(live))
    fields = [e.field for e in err.value.errors]
    assert "budgets[org].spec.limits.total_tokens" in fields
    assert "budgets[team].spec.limits.total_tokens" in fields


def test_pruning_a_parent_of_a_kept_budget_is_refused() -> None:
    live = {"org": s("org", 1000), "team": s("team", 800, "org")}
    with pytest.raises(bac.PlanRejected) as err:
        bac.plan({"team": s("team", 800, "org")}, live_of(live), prune=True)
    assert {e.field for e in err.value.errors} >= {"budgets[org].budget_id"}


def test_a_tree_no_single_write_sequence_reaches_is_refused_up_front() -> None:
    live = {"org": s("org", 1000), "team": s("team", 800, "org")}
    desired = {"org": s("org", 1000, kind="week"), "team": s("team", 800, "org", kind="week")}
    with pytest.raises(bac.PlanRejected) as err:
        bac.plan(desired, live_of(live))
    assert err.value.errors[0].field == "budgets"
    assert "one write at a time" in err.value.errors[0].rule


@st.composite
def two_trees(draw: st.DrawFn) -> tuple[dict[str, BudgetSpec], dict[str, BudgetSpec]]:
    """One shape, two valid sets of limits (children allocate at most their parent's)."""
    size = draw(st.integers(2, 8))
    parents = [None] + [f"n{draw(st.integers(0, i - 1))}" for i in range(1, size)]
    result = []
    for _ in range(2):
        limits: dict[str, int] = {}
        for i in reversed(range(size)):
            kids = [f"n{j}" for j in range(size) if parents[j] == f"n{i}"]
            limits[f"n{i}"] = draw(st.integers(0, 50)) + sum(limits[k] for k in kids) or 1
        result.append({b: s(b, limits[b], parents[int(b[1:])]) for b in limits})
    return result[0], result[1]


@settings(max_examples=200, deadline=None)
@given(trees=two_trees())
def test_any_valid_tree_is_reached_from_any_other_of_its_shape(
    trees: tuple[dict[str, BudgetSpec], dict[str, BudgetSpec]],
) -> None:
    live, desired = trees
    assert replay(live, bac.plan(desired, live_of(live))) == desired
