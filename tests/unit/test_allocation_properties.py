"""Properties of the allocation rules under any sequence of wishes.

Whatever draws, reservations and rebalances are asked for, every accepted one keeps: each
child's draws within its cap, the parent's pool never below zero, the tenant's rebalanced total
within its cap, and a replay of the accepted events giving the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from schemas.allocation import RebalanceRuleSet, ReservationMade
from schemas.base import Event
from schemas.budgets import BudgetSpec
from streams.allocation import (
    AllocationState,
    apply_allocation_event,
    pool,
)
from streams.allocation_plans import (
    check_reservation,
    plan_overflow_draw,
    plan_rebalance,
)
from streams.allocation_tree import AllocationRejected


@dataclass(frozen=True)
class Win:
    key: str
    start: datetime
    end: datetime


NOV = Win("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
CAPS = {"a": 300, "b": 50, "c": 0}


def specs(parent_limit: int, limits: tuple[int, int, int]) -> dict[str, BudgetSpec]:
    result = {"org": BudgetSpec(name="org", limits={"total_tokens": parent_limit})}
    for name, limit in zip("abc", limits, strict=True):
        result[name] = BudgetSpec.model_validate(
            {
                "name": name,
                "limits": {"total_tokens": limit},
                "parent": "org",
                "overflow_cap_tokens": CAPS[name],
            }
        )
    return result


wish = st.one_of(
    st.tuples(st.just("draw"), st.sampled_from("abc"), st.integers(1, 400)),
    st.tuples(st.just("reserve"), st.just("org"), st.integers(1, 400)),
    st.tuples(st.just("rebalance"), st.just(""), st.integers(0, 300)),
)


@given(
    parent_limit=st.integers(600, 2000),
    limits=st.tuples(*[st.integers(1, 200)] * 3),
    wishes=st.lists(st.tuples(wish, st.integers(0, 29)), max_size=25),
    cap=st.none() | st.integers(0, 500),
)
def test_accepted_wishes_keep_every_cap(
    parent_limit: int,
    limits: tuple[int, int, int],
    wishes: list[tuple[tuple[str, str, int], int]],
    cap: int | None,
) -> None:
    tree = specs(parent_limit, limits)
    rule = RebalanceRuleSet(tenant="t", occurred_at=NOV.start, actor="x", tenant_cap_tokens=cap)
    state = apply_allocation_event(AllocationState(), rule)
    accepted: list[Event] = [rule]
    ordered = sorted(wishes, key=lambda w: w[1])  # time moves forward
    for n, ((kind, budget, tokens), day) in enumerate(ordered):
        at = NOV.start + timedelta(days=day)
        events: list[Event] = []
        try:
            if kind == "draw":
                drawn = plan_overflow_draw(
                    tree, state, budget, NOV, at, {}, metric="total", tokens=tokens,
                    draw_id=f"d{n}", tenant="t", actor="x", reason="",
                )  # fmt: skip
                events = [drawn] if drawn is not None else []
            elif kind == "reserve":
                made = ReservationMade(
                    reservation_id=f"r{n}", tenant="t", budget_id=budget, tokens=tokens,
                    starts_at=at + timedelta(days=1), ends_at=at + timedelta(days=2),
                    occurred_at=at, actor="x",
                )  # fmt: skip
                check_reservation(tree, state, made, NOV, at, {})
                events = [made]
            else:
                consumed = {b: {"total": tokens} for b in "abc"}
                events = list(plan_rebalance(tree, state, NOV, at, consumed, tenant="t", actor="x"))
        except AllocationRejected:
            continue
        for event in events:
            state = apply_allocation_event(state, event)  # type: ignore[arg-type]
            accepted.append(event)
            assert pool(tree, state, "org", NOV, at)["total"] >= 0
        for name, limit in CAPS.items():
            assert state.drawn.get(name, {}).get(NOV.key, {}).get("total", 0) <= limit
        if cap is not None:
            assert state.rebalanced.get(NOV.key, 0) <= cap

    replayed = AllocationState()
    for event in accepted + accepted:
        replayed = apply_allocation_event(replayed, event)  # type: ignore[arg-type]
    assert replayed == state
