"""Allocation is conserved: rebalancing, reservations and draws never hand out tokens twice.

A budget that has children holds what it allocated to them for them, spent or not; only its
pool, less its own direct use, is free at its level. Tokens already consumed cannot be given
back or earmarked for later. Random trees and usage check that no pool goes below zero and that
the tokens of a tree stay its root's limit, however auto-rebalance moves them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.allocation import RebalanceRuleSet, ReservationMade
from schemas.budgets import BudgetSpec, Period
from streams.allocation import (
    AllocationState,
    apply_allocation_event,
    effective_limits,
    pool,
)
from streams.allocation_plans import check_reservation, plan_overflow_draw, plan_rebalance
from streams.allocation_tree import AllocationRejected, children_of
from streams.periods import period_of

NOV = period_of(Period(kind="month", timezone="UTC"), datetime(2026, 11, 1, tzinfo=UTC))
LATE = datetime(2026, 11, 20, tzinfo=UTC)


def spec(name: str, total: int, parent: str | None = None, cap: int | None = None) -> BudgetSpec:
    return BudgetSpec.model_validate(
        {"name": name, "limits": {"total_tokens": total}, "parent": parent,
         "overflow_cap_tokens": cap}
    )  # fmt: skip


TEAM_TREE = {
    "org": spec("org", 1000),
    "team": spec("team", 100, "org"),
    "a": spec("a", 60, "team", cap=50),
    "b": spec("b", 40, "team", cap=50),
}


def rebalance(
    specs: dict[str, BudgetSpec], state: AllocationState, consumed: dict[str, dict[str, int]]
) -> tuple[AllocationState, list[tuple[str, str, int]]]:
    moves = plan_rebalance(specs, state, NOV, LATE, consumed, tenant="t", actor="x")
    for move in moves:
        state = apply_allocation_event(state, move)
    return state, [(m.from_budget_id, m.to_budget_id, m.tokens) for m in moves]


def test_a_team_never_gives_back_what_its_children_still_hold() -> None:
    consumed = {"org": {"total": 45}, "team": {"total": 45}, "a": {"total": 45}}
    state, moves = rebalance(TEAM_TREE, AllocationState(), consumed)
    # b gives half its unused 40; the team may pass on only that (its own pool was empty),
    # not half of its 55 unused, which counts a's unspent 15 and b's remaining 20.
    assert moves == [("b", "team", 20), ("team", "org", 20)]
    assert pool(TEAM_TREE, state, "team", NOV, LATE) == {"total": 0}
    assert pool(TEAM_TREE, state, "org", NOV, LATE) == {"total": 920}
    assert effective_limits(TEAM_TREE, state, "a", NOV, LATE) == {"total": 60}
    assert rebalance(TEAM_TREE, state, consumed)[1] == []


def test_a_team_does_not_give_back_what_it_spent_itself() -> None:
    specs = {**TEAM_TREE, "team": spec("team", 200, "org")}  # a pool of 100 at the team
    everything = RebalanceRuleSet(tenant="t", occurred_at=NOV.start, actor="x", share_percent=100)
    state = apply_allocation_event(AllocationState(), everything)
    # 65 of the team's 95 were its own direct use (not through a or b); a is not under-used.
    consumed = {"team": {"total": 95}, "a": {"total": 30}, "b": {"total": 0}}
    state, moves = rebalance(specs, state, consumed)
    # b gives its 40; of the team's pool of 140 its own 65 are spent: 75 may go, not 105.
    assert moves == [("b", "team", 40), ("team", "org", 75)]
    assert pool(specs, state, "team", NOV, LATE) == {"total": 65}


def test_leaves_keep_the_documented_share() -> None:
    consumed = {"a": {"total": 100}, "b": {"total": 300}}
    specs = {"org": spec("org", 1000), "a": spec("a", 400, "org"), "b": spec("b", 400, "org")}
    assert rebalance(specs, AllocationState(), consumed)[1] == [("a", "org", 150)]


def reservation(budget: str, tokens: int, starts: datetime) -> ReservationMade:
    return ReservationMade(
        reservation_id=f"r-{budget}-{tokens}", tenant="t", budget_id=budget, tokens=tokens,
        starts_at=starts, ends_at=starts + timedelta(days=2), occurred_at=LATE, actor="me",
    )  # fmt: skip


def test_a_reservation_cannot_earmark_spent_tokens() -> None:
    specs = {"leaf": spec("leaf", 1000)}
    event = reservation("leaf", 500, LATE + timedelta(days=5))
    with pytest.raises(AllocationRejected) as err:
        check_reservation(specs, AllocationState(), event, NOV, LATE, {"leaf": {"total": 900}})
    assert err.value.errors[0].field == "tokens"
    assert "100 unspent" in err.value.errors[0].rule
    assert "900 consumed in 2026-11" in err.value.errors[0].rule
    fits = reservation("leaf", 100, LATE + timedelta(days=5))
    check_reservation(specs, AllocationState(), fits, NOV, LATE, {"leaf": {"total": 900}})


def test_a_parent_reserves_only_its_pool_less_its_own_use() -> None:
    specs = {**TEAM_TREE, "team": spec("team", 200, "org")}
    consumed = {"team": {"total": 90}, "a": {"total": 10}}  # 80 of the team's own
    event = reservation("team", 21, LATE + timedelta(days=2))
    with pytest.raises(AllocationRejected) as err:
        check_reservation(specs, AllocationState(), event, NOV, LATE, consumed)
    assert "20 unallocated and unspent" in err.value.errors[0].rule
    check_reservation(
        specs, AllocationState(), reservation("team", 20, LATE + timedelta(days=2)), NOV, LATE,
        consumed,
    )  # fmt: skip


def draw_from_team(
    consumed: dict[str, dict[str, int]], tokens: int, partial: bool = False
) -> int | None:
    specs = {**TEAM_TREE, "team": spec("team", 200, "org")}  # a pool of 100
    drawn = plan_overflow_draw(
        specs, AllocationState(), "a", NOV, LATE, consumed, metric="total", tokens=tokens,
        draw_id="d", tenant="t", actor="me", reason="", partial=partial,
    )  # fmt: skip
    return None if drawn is None else drawn.tokens


def test_a_draw_takes_only_the_parents_pool_less_its_own_use() -> None:
    consumed = {"team": {"total": 90}, "a": {"total": 10}}  # 80 of the team's own
    with pytest.raises(AllocationRejected) as err:
        draw_from_team(consumed, 21)
    assert err.value.errors[0].field == "tokens"
    assert "20 total tokens unallocated and unspent" in err.value.errors[0].rule
    assert "90 consumed in 2026-11" in err.value.errors[0].rule
    assert draw_from_team(consumed, 20) == 20
    assert draw_from_team(consumed, 50, partial=True) == 20
    assert draw_from_team({"team": {"total": 100}}, 1, partial=True) is None
    # Usage of the children within their allocations is theirs, not the team's.
    assert draw_from_team({"team": {"total": 60}, "a": {"total": 60}}, 50) == 50


@st.composite
def trees(draw: st.DrawFn) -> tuple[dict[str, BudgetSpec], dict[str, dict[str, int]]]:
    """A valid tree (children allocate at most their parent's limit) and nested usage."""
    size = draw(st.integers(2, 9))
    parents = [None] + [f"n{draw(st.integers(0, i - 1))}" for i in range(1, size)]
    slack = [draw(st.integers(1, 300)) for _ in range(size)]
    direct = [draw(st.integers(0, 400)) for _ in range(size)]
    limits: dict[str, int] = {}
    used: dict[str, int] = {}
    for i in reversed(range(size)):  # a child's index is above its parent's
        kids = [f"n{j}" for j in range(size) if parents[j] == f"n{i}"]
        limits[f"n{i}"] = slack[i] + sum(limits[k] for k in kids)
        used[f"n{i}"] = direct[i] + sum(used[k] for k in kids)  # selectors nest
    specs = {name: spec(name, limits[name], parents[int(name[1:])]) for name in limits}
    return specs, {name: {"total": tokens} for name, tokens in used.items()}


@settings(max_examples=300, deadline=None)
@given(
    tree=trees(),
    under=st.integers(1, 100),
    share=st.integers(1, 100),
    cap=st.none() | st.integers(0, 500),
)
def test_rebalance_conserves_the_tree_and_keeps_every_pool(
    tree: tuple[dict[str, BudgetSpec], dict[str, dict[str, int]]],
    under: int,
    share: int,
    cap: int | None,
) -> None:
    specs, consumed = tree
    rule = RebalanceRuleSet(
        tenant="t", occurred_at=NOV.start, actor="x", under_percent=under,
        share_percent=share, tenant_cap_tokens=cap,
    )  # fmt: skip
    before = apply_allocation_event(AllocationState(), rule)
    parents = [b for b in specs if children_of(specs, b)]
    leaves = [b for b in specs if b not in parents]
    state, moves = rebalance(specs, before, consumed)

    for budget_id in parents:
        assert pool(specs, state, budget_id, NOV, LATE)["total"] >= 0, moves
    # Whatever moved, the root's tokens are its pools and its leaves' allocations, once each.
    held = sum(pool(specs, state, b, NOV, LATE)["total"] for b in parents) + sum(
        effective_limits(specs, state, b, NOV, LATE)["total"] for b in leaves
    )
    assert held == specs["n0"].limits.by_metric()["total"]
    # A giver gives only what it had free: tokens it spent and its children's stay put.
    for giver in {g for g, _, _ in moves}:
        left = effective_limits(specs, state, giver, NOV, LATE)["total"]
        kids = children_of(specs, giver)
        if kids:
            allocated = [effective_limits(specs, state, k, NOV, LATE)["total"] for k in kids]
            within = sum(min(consumed[k]["total"], a) for k, a in zip(kids, allocated, strict=True))
            own = max(0, consumed[giver]["total"] - within)
            assert left - sum(allocated) >= own, moves
        assert left >= consumed[giver]["total"], moves
    assert rebalance(specs, state, consumed)[1] == []  # one run does it all


async def test_the_api_reads_consumption_of_the_period_the_reservation_starts_in() -> None:
    from services.api.commands import _consumed_by_start

    asked: list[dict[str, str]] = []

    async def consumption(tenant: str, keys: dict[str, str]) -> dict[str, dict[str, int]]:
        asked.append(keys)
        return {b: {"total": 10} for b in keys}

    weekly = Period(kind="rolling", window_days=7, timezone="UTC")
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    starts = datetime(2026, 11, 22, tzinfo=UTC)  # its window: Nov 16-22, of which 16-20 are past
    got = await _consumed_by_start(consumption, "t", ["w", "kid"], weekly, starts, now)
    assert got == {"w": {"total": 50}, "kid": {"total": 50}}
    assert [k["w"] for k in asked] == [f"2026-11-{d}" for d in range(16, 21)]

    asked.clear()
    month = Period(kind="month", timezone="UTC")
    assert await _consumed_by_start(consumption, "t", ["m"], month, starts, now) == {
        "m": {"total": 10}
    }
    december = datetime(2026, 12, 2, tzinfo=UTC)
    assert await _consumed_by_start(consumption, "t", ["m"], month, december, now) == {}
    assert [k["m"] for k in asked] == ["2026-11"]
