"""Property: the most restrictive decision wins, whatever order the budgets come in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import BudgetSpec, Degrade, Limits, Period
from streams.budgets import Budget
from streams.periods import PeriodWindow, period_of
from streams.policy import RESTRICTIVENESS, PolicyDecision, decide, most_restrictive

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


@st.composite
def budgets(draw: Any) -> tuple[Budget, PeriodWindow]:
    at_limit = draw(st.sampled_from(["alert_only", "degrade_route", "hard_stop"]))
    degrade = None
    if at_limit == "degrade_route" or draw(st.booleans()):
        degrade = Degrade(
            target_model=draw(st.sampled_from(["small", "tiny"])),
            start_percent=draw(st.integers(50, 120)),
            on_projected_overrun=draw(st.booleans()),
        )
    period = Period(kind=draw(st.sampled_from(["day", "week", "month"])))
    spec = BudgetSpec(
        name="b",
        limits=Limits(total_tokens=100),
        period=period,
        at_limit=at_limit,
        degrade=degrade,
    )
    budget = Budget(f"b{draw(st.integers(0, 5))}", "acme", 1, spec)
    at = NOW + timedelta(hours=draw(st.integers(0, 24 * 40)))
    return budget, period_of(period, at)


@st.composite
def decisions(draw: Any) -> PolicyDecision:
    budget, window = draw(budgets())
    percent = draw(st.floats(0, 250, allow_nan=False))
    return decide(budget, percent, window, window.end, draw(st.booleans()))


@settings(max_examples=200, deadline=None)
@given(pool=st.lists(decisions(), min_size=1, max_size=8), data=st.data())
def test_most_restrictive_wins_regardless_of_order(pool: list[PolicyDecision], data: Any) -> None:
    winner = most_restrictive(pool)
    shuffled = data.draw(st.permutations(pool))
    assert most_restrictive(shuffled) == winner
    assert most_restrictive(reversed(pool)) == winner
    assert winner in pool
    assert RESTRICTIVENESS[winner.policy] == max(RESTRICTIVENESS[d.policy] for d in pool)


@settings(max_examples=200, deadline=None)
@given(
    case=budgets(),
    percents=st.lists(st.floats(0, 250, allow_nan=False), min_size=2, max_size=2),
    overrun=st.booleans(),
)
def test_more_consumption_is_never_less_restrictive(
    case: tuple[Budget, PeriodWindow], percents: list[float], overrun: bool
) -> None:
    budget, window = case
    low, high = sorted(percents)
    before = decide(budget, low, window, window.end, overrun)
    after = decide(budget, high, window, window.end, overrun)
    assert RESTRICTIVENESS[before.policy] <= RESTRICTIVENESS[after.policy]
