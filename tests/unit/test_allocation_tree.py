"""Tree rules: unknown parent, cycles, shared periods, over-allocation with and without overflow."""

from __future__ import annotations

from schemas.budgets import BudgetSpec
from streams.allocation_tree import check_retire, children_of, validate_tree


def spec(total: int, parent: str | None = None, **extra: object) -> BudgetSpec:
    return BudgetSpec.model_validate(
        {"name": "b", "limits": {"total_tokens": total}, "parent": parent, **extra}
    )


def fields(errors: list) -> list[str]:
    return [e.field for e in errors]


def test_a_tree_within_its_parent_is_valid() -> None:
    specs = {"org": spec(100), "a": spec(60, "org"), "b": spec(40, "org")}
    assert validate_tree(specs, "b") == []
    assert children_of(specs, "org") == ["a", "b"]


def test_unknown_parent_names_the_parent_field() -> None:
    errors = validate_tree({"a": spec(10, "ghost")}, "a")
    assert fields(errors) == ["spec.parent"]
    assert "unknown parent 'ghost'" in errors[0].rule


def test_self_parent_is_a_cycle() -> None:
    errors = validate_tree({"a": spec(10, "a")}, "a")
    assert fields(errors) == ["spec.parent"] and "cycle" in errors[0].rule


def test_re_parenting_under_a_descendant_is_a_cycle() -> None:
    specs = {"org": spec(100, "team"), "team": spec(50, "org")}
    errors = validate_tree(specs, "org")
    assert fields(errors) == ["spec.parent"]
    assert "org -> team -> org" in errors[0].rule


def test_children_beyond_parent_without_overflow_are_rejected_on_the_child() -> None:
    specs = {"org": spec(100), "a": spec(60, "org"), "b": spec(50, "org")}
    errors = validate_tree(specs, "b")
    assert fields(errors) == ["spec.limits.total_tokens"]
    assert "allocate 110" in errors[0].rule and "allows no overflow" in errors[0].rule


def test_shrinking_a_parent_below_its_children_is_rejected_on_the_parent() -> None:
    specs = {"org": spec(50), "a": spec(60, "org")}
    errors = validate_tree(specs, "org")
    assert fields(errors) == ["spec.limits.total_tokens"]
    assert "children allocate 60" in errors[0].rule


def test_a_parent_with_overflow_allows_that_much_over_allocation() -> None:
    specs = {
        "org": spec(1000),
        "team": spec(100, "org", overflow_cap_tokens=20),
        "a": spec(60, "team"),
        "b": spec(60, "team"),
    }
    assert validate_tree(specs, "b") == []
    specs["b"] = spec(61, "team")
    assert fields(validate_tree(specs, "b")) == ["spec.limits.total_tokens"]


def test_a_child_must_share_its_parent_period() -> None:
    specs = {"org": spec(100), "a": spec(10, "org", period={"kind": "day"})}
    errors = validate_tree(specs, "a")
    assert fields(errors) == ["spec.period"]


def test_metrics_the_parent_does_not_limit_are_free() -> None:
    specs = {
        "org": spec(100),
        "a": BudgetSpec.model_validate(
            {"name": "a", "parent": "org", "limits": {"input_tokens": 10**6}}
        ),
    }
    assert validate_tree(specs, "a") == []


def test_a_parent_with_live_children_cannot_retire() -> None:
    specs = {"org": spec(100), "a": spec(10, "org")}
    assert fields(check_retire(specs, "org")) == ["budget_id"]
    assert check_retire(specs, "a") == []
