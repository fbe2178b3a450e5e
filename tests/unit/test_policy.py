"""Policy decisions, the most restrictive one, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.budgets import BudgetSpec, Degrade, Limits, Period
from streams.budgets import Budget
from streams.errors import NaiveDatetime, NoDecisions
from streams.periods import period_of
from streams.policy import (
    RESTRICTIVENESS,
    PolicyDecision,
    decide,
    most_restrictive,
    policy_changed,
    retry_after_seconds,
)

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
WINDOW = period_of(Period(kind="month"), NOW)
RESET = WINDOW.end


def budget(**spec: Any) -> Budget:
    fields: dict[str, Any] = {"name": "b", "limits": Limits(total_tokens=1000)}
    fields.update(spec)
    return Budget("b1", "acme", 1, BudgetSpec(**fields))


DEGRADE = Degrade(target_model="gpt-4o-mini", start_percent=90, concise_prompt=True)


def test_below_every_line_allows() -> None:
    decision = decide(budget(at_limit="hard_stop", degrade=DEGRADE), 50.0, WINDOW, RESET)
    assert decision.policy == "allow"
    assert decision.target_model is None


def test_at_limit_applies_the_budget_action() -> None:
    for action in ("alert_only", "hard_stop"):
        decision = decide(budget(at_limit=action), 100.0, WINDOW, RESET)
        assert decision.policy == action
        assert decision.reset_at == RESET


def test_degrade_starts_at_start_percent() -> None:
    decision = decide(budget(at_limit="hard_stop", degrade=DEGRADE), 91.0, WINDOW, RESET)
    assert decision.policy == "degrade_route"
    assert decision.target_model == "gpt-4o-mini"
    assert decision.concise_prompt
    assert decide(budget(at_limit="hard_stop", degrade=DEGRADE), 100.0, WINDOW, RESET).policy == (
        "hard_stop"
    )


def test_degrade_route_at_limit_carries_the_model_map() -> None:
    degrade = Degrade(model_map={"gpt-4o": "gpt-4o-mini"}, cache_ttl_seconds=60)
    decision = decide(budget(at_limit="degrade_route", degrade=degrade), 120.0, WINDOW, RESET)
    assert decision.policy == "degrade_route"
    assert decision.model_map == {"gpt-4o": "gpt-4o-mini"}
    assert decision.cache_ttl_seconds == 60


def test_projected_overrun_demotes_only_when_opted_in() -> None:
    opted = Degrade(target_model="small", on_projected_overrun=True)
    assert decide(budget(degrade=opted), 40.0, WINDOW, RESET, True).policy == "degrade_route"
    assert decide(budget(degrade=DEGRADE), 40.0, WINDOW, RESET, True).policy == "allow"
    assert decide(budget(degrade=opted), 40.0, WINDOW, RESET, False).policy == "allow"


def test_demotion_is_not_undone_by_an_alert_only_limit() -> None:
    decision = decide(budget(at_limit="alert_only", degrade=DEGRADE), 130.0, WINDOW, RESET)
    assert decision.policy == "degrade_route"


def test_degrade_without_target_never_routes() -> None:
    decision = decide(budget(degrade=Degrade(start_percent=50)), 95.0, WINDOW, RESET)
    assert decision.policy == "allow"


def test_decision_builds_policy_changed() -> None:
    decision = decide(
        budget(at_limit="hard_stop"),
        104.0,
        WINDOW,
        RESET,
        metric="total",
        consumed=1040,
        limit=1000,
    )
    event = decision.to_event(NOW)
    assert (event.policy, event.budget_id, event.tenant, event.period_key) == (
        "hard_stop",
        "b1",
        "acme",
        "2026-11",
    )
    assert (event.consumed, event.limit, event.remaining, event.reset_at) == (1040, 1000, 0, RESET)
    assert "104.0%" in event.reason


def test_decision_round_trips_through_orjson_even_when_infinite() -> None:
    decision = decide(budget(at_limit="hard_stop"), float("inf"), WINDOW, RESET)
    again = PolicyDecision.from_dict(orjson.loads(orjson.dumps(decision.to_dict())))
    assert again == decision


def test_most_restrictive_prefers_hard_stop_then_later_reset() -> None:
    allow = decide(budget(), 10.0, WINDOW, RESET)
    soon = decide(budget(at_limit="hard_stop"), 100.0, WINDOW, RESET)
    later = decide(budget(at_limit="hard_stop"), 100.0, WINDOW, RESET + timedelta(days=3))
    assert most_restrictive([allow, soon, later]) == later
    assert most_restrictive([later, allow, soon]) == later
    assert RESTRICTIVENESS["degrade_route"] < RESTRICTIVENESS["hard_stop"]


def test_most_restrictive_of_nothing_is_an_error() -> None:
    with pytest.raises(NoDecisions):
        most_restrictive([])


def test_policy_changed_only_on_what_the_proxy_sees() -> None:
    allow = decide(budget(at_limit="hard_stop"), 10.0, WINDOW, RESET)
    stop = decide(budget(at_limit="hard_stop"), 100.0, WINDOW, RESET, consumed=1000)
    stop_more = decide(budget(at_limit="hard_stop"), 110.0, WINDOW, RESET, consumed=1100)
    assert not policy_changed(None, allow)
    assert policy_changed(None, stop)
    assert policy_changed(allow, stop)
    assert not policy_changed(stop, stop_more)
    assert policy_changed(stop, allow)


def test_retry_after_rounds_up_and_is_at_least_one() -> None:
    assert retry_after_seconds(NOW + timedelta(seconds=10), NOW) == 10
    assert retry_after_seconds(NOW + timedelta(seconds=10, milliseconds=1), NOW) == 11
    assert retry_after_seconds(NOW, NOW) == 1
    assert retry_after_seconds(NOW - timedelta(hours=1), NOW) == 1


def test_retry_after_refuses_naive_times() -> None:
    with pytest.raises(NaiveDatetime) as info:
        retry_after_seconds(datetime(2026, 12, 1), NOW)
    assert info.value.field == "reset_at"
