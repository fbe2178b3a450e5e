"""Selector matching and tenant-scoped budget matching."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.budgets import BudgetSpec, Limits, Selector
from schemas.usage import UsageRecorded
from streams.budgets import Budget, BudgetIndex
from streams.selectors import compile_selector, match_budgets, matches

AT = datetime(2026, 11, 27, 12, tzinfo=UTC)


def usage(**fields: Any) -> UsageRecorded:
    base: dict[str, Any] = {
        "event_id": "e1",
        "source": "test",
        "occurred_at": AT,
        "received_at": AT,
        "tenant": "acme",
        "input_uncached": 10,
        "output": 5,
    }
    base.update(fields)
    return UsageRecorded.model_validate(base)


def budget(budget_id: str, tenant: str = "acme", **selector: Any) -> Budget:
    spec = BudgetSpec(
        name=budget_id, selector=Selector(**selector), limits=Limits(total_tokens=1000)
    )
    return Budget(budget_id, tenant, 1, spec)


def test_empty_selector_matches_everything() -> None:
    assert matches(Selector(), usage())


def test_dimension_values_are_alternatives() -> None:
    selector = Selector(team=["search", "support"])
    assert matches(selector, usage(team="support"))
    assert not matches(selector, usage(team="billing"))
    assert not matches(selector, usage())  # no team on the event


def test_every_dimension_must_match() -> None:
    selector = Selector(team=["support"], feature=["copilot"], provider=["openai"])
    assert matches(selector, usage(team="support", feature="copilot", provider="openai"))
    assert not matches(selector, usage(team="support", feature="copilot", provider="anthropic"))


def test_all_selector_tags_must_be_on_the_event() -> None:
    selector = Selector(tags=["prod", "eu"])
    assert matches(selector, usage(tags=["eu", "prod", "beta"]))
    assert not matches(selector, usage(tags=["prod"]))


def test_model_matches_request_or_response_model() -> None:
    selector = Selector(model=["gpt-4o"])
    assert matches(selector, usage(request_model="gpt-4o", response_model="gpt-4o-2024-08-06"))
    assert matches(selector, usage(request_model="auto", response_model="gpt-4o"))
    assert not matches(selector, usage(request_model="gpt-4o-mini"))


def test_user_and_virtual_key_dimensions() -> None:
    selector = Selector(user=["ann"], virtual_key=["vk-1"])
    assert matches(selector, usage(user="ann", virtual_key="vk-1"))
    assert not matches(selector, usage(user="ann", virtual_key="vk-2"))


def test_compiled_matcher_agrees_with_matches() -> None:
    selector = Selector(team=["a"], tags=["x"])
    event = usage(team="a", tags=["x"])
    assert compile_selector(selector)(event) is matches(selector, event) is True


def test_match_budgets_never_returns_another_tenants_budget() -> None:
    index = BudgetIndex([budget("b-acme"), budget("b-other", tenant="other")])
    assert [b.budget_id for b in match_budgets(index, usage())] == ["b-acme"]
    assert [b.budget_id for b in match_budgets(index, usage(tenant="other"))] == ["b-other"]
    assert match_budgets(index, usage(tenant="nobody")) == []


def test_match_budgets_filters_by_selector_in_id_order() -> None:
    index = BudgetIndex(
        [budget("z-all"), budget("a-support", team=["support"]), budget("m-search", team=["s"])]
    )
    matched = match_budgets(index, usage(team="support"))
    assert [b.budget_id for b in matched] == ["a-support", "z-all"]
