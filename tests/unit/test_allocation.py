"""Effective limits: overflow draws, reservations and auto-rebalance, folded from events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from schemas.allocation import (
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.budgets import BudgetDefined, BudgetSpec
from streams.allocation import (
    AllocationBook,
    AllocationState,
    apply_allocation_event,
    effective_limits,
    effective_limits_at,
    pool,
)
from streams.allocation_plans import (
    check_reservation,
    plan_overflow_draw,
    plan_rebalance,
    rebalance_due,
)
from streams.allocation_tree import AllocationRejected


@dataclass(frozen=True)
class Win:
    key: str
    start: datetime
    end: datetime


NOV = Win("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
EARLY = datetime(2026, 11, 5, tzinfo=UTC)
LATE = datetime(2026, 11, 20, tzinfo=UTC)


def spec(total: int, parent: str | None = None, cap: int | None = None) -> BudgetSpec:
    return BudgetSpec.model_validate(
        {
            "name": "b",
            "limits": {"total_tokens": total},
            "parent": parent,
            "overflow_cap_tokens": cap,
        }
    )


SPECS = {"org": spec(1000), "a": spec(400, "org", cap=150), "b": spec(400, "org")}


def draw(
    tokens: int,
    draw_id: str = "d1",
    state: AllocationState | None = None,
    consumed: dict[str, dict[str, int]] | None = None,
) -> OverflowDrawn:
    event = plan_overflow_draw(
        SPECS,
        state or AllocationState(),
        "a",
        NOV,
        EARLY,
        consumed or {},
        metric="total",
        tokens=tokens,
        draw_id=draw_id,
        tenant="t",
        actor="me",
        reason="launch",
    )
    assert event is not None
    return event


def test_the_pool_is_the_parents_unallocated_part() -> None:
    assert pool(SPECS, AllocationState(), "org", NOV, EARLY) == {"total": 200}


def test_an_overflow_draw_raises_the_childs_limit_and_shrinks_the_pool() -> None:
    state = apply_allocation_event(AllocationState(), draw(100))
    assert effective_limits(SPECS, state, "a", NOV, EARLY) == {"total": 500}
    assert pool(SPECS, state, "org", NOV, EARLY) == {"total": 100}
    assert effective_limits(SPECS, state, "a", Win("2026-12", NOV.end, NOV.end), EARLY) == {
        "total": 400
    }


def test_effective_limits_at_finds_the_budgets_own_period() -> None:
    state = apply_allocation_event(AllocationState(), draw(100))
    assert effective_limits_at(SPECS, state, "a", EARLY) == {"total": 500}
    assert effective_limits_at(SPECS, state, "a", datetime(2026, 12, 2, tzinfo=UTC)) == {
        "total": 400
    }


def test_a_replayed_draw_counts_once() -> None:
    event = draw(100)
    state = apply_allocation_event(apply_allocation_event(AllocationState(), event), event)
    assert effective_limits(SPECS, state, "a", NOV, EARLY) == {"total": 500}


def test_draws_stop_at_the_childs_cap() -> None:
    state = apply_allocation_event(AllocationState(), draw(100))
    with pytest.raises(AllocationRejected) as err:
        draw(60, "d2", state)
    assert err.value.errors[0].field == "tokens" and "overflow cap" in err.value.errors[0].rule


def test_a_child_without_cap_cannot_draw() -> None:
    with pytest.raises(AllocationRejected):
        plan_overflow_draw(
            SPECS,
            AllocationState(),
            "b",
            NOV,
            EARLY,
            {},
            metric="total",
            tokens=1,
            draw_id="x",
            tenant="t",
            actor="me",
            reason="",
        )


def test_a_partial_draw_takes_what_cap_and_pool_allow() -> None:
    event = plan_overflow_draw(
        SPECS,
        AllocationState(),
        "a",
        NOV,
        EARLY,
        {},
        metric="total",
        tokens=10**6,
        draw_id="auto",
        tenant="t",
        actor="pipeline",
        reason="",
        partial=True,
    )
    assert event is not None and event.tokens == 150


def reservation(tokens: int, budget: str = "org") -> ReservationMade:
    return ReservationMade(
        reservation_id="black-friday",
        tenant="t",
        budget_id=budget,
        tokens=tokens,
        starts_at=datetime(2026, 11, 27, tzinfo=UTC),
        ends_at=datetime(2026, 11, 30, tzinfo=UTC),
        occurred_at=EARLY,
        actor="me",
        reason="sale",
    )


def test_a_reservation_holds_tokens_back_until_its_window() -> None:
    event = reservation(150)
    check_reservation(SPECS, AllocationState(), event, NOV, EARLY, {})
    state = apply_allocation_event(AllocationState(), event)
    assert effective_limits(SPECS, state, "org", NOV, EARLY) == {"total": 850}
    assert pool(SPECS, state, "org", NOV, EARLY) == {"total": 50}
    in_window = datetime(2026, 11, 28, tzinfo=UTC)
    assert effective_limits(SPECS, state, "org", NOV, in_window) == {"total": 1000}


def test_consumption_before_the_window_cannot_draw_reserved_tokens() -> None:
    state = apply_allocation_event(AllocationState(), reservation(150))
    with pytest.raises(AllocationRejected) as err:
        draw(100, state=state)
    assert "pool of 'org'" in err.value.errors[0].rule


def test_a_released_reservation_frees_its_tokens() -> None:
    state = apply_allocation_event(AllocationState(), reservation(150))
    released = ReservationReleased(
        reservation_id="black-friday",
        budget_id="org",
        tenant="t",
        occurred_at=EARLY,
        actor="me",
        reason="cancelled",
    )
    state = apply_allocation_event(state, released)
    assert effective_limits(SPECS, state, "org", NOV, EARLY) == {"total": 1000}


def test_a_reservation_id_is_never_reused() -> None:
    state = apply_allocation_event(AllocationState(), reservation(10))
    released = ReservationReleased(
        reservation_id="black-friday", budget_id="org", tenant="t", occurred_at=EARLY, actor="me"
    )
    state = apply_allocation_event(state, released)
    with pytest.raises(AllocationRejected) as err:
        check_reservation(SPECS, state, reservation(10), NOV, EARLY, {})
    assert err.value.errors[0].field == "reservation_id"


def test_a_reservation_in_the_past_or_too_large_is_rejected() -> None:
    with pytest.raises(AllocationRejected) as err:
        check_reservation(SPECS, AllocationState(), reservation(10), NOV, LATE.replace(day=28), {})
    assert err.value.errors[0].field == "starts_at"
    with pytest.raises(AllocationRejected) as err:
        check_reservation(SPECS, AllocationState(), reservation(401, "a"), NOV, EARLY, {})
    assert err.value.errors[0].field == "tokens"


def test_a_parent_holds_back_only_its_pool() -> None:
    with pytest.raises(AllocationRejected) as err:
        check_reservation(SPECS, AllocationState(), reservation(201), NOV, EARLY, {})
    assert "200 unallocated" in err.value.errors[0].rule


def test_rebalance_waits_for_the_midpoint() -> None:
    assert not rebalance_due(AllocationState().rule, NOV, EARLY)
    assert plan_rebalance(SPECS, AllocationState(), NOV, EARLY, {}, tenant="t", actor="x") == []


def test_rebalance_gives_half_the_unused_of_under_used_children() -> None:
    consumed = {"a": {"total": 100}, "b": {"total": 300}}
    moves = plan_rebalance(SPECS, AllocationState(), NOV, LATE, consumed, tenant="t", actor="x")
    assert [(m.from_budget_id, m.to_budget_id, m.tokens) for m in moves] == [("a", "org", 150)]
    state = apply_allocation_event(AllocationState(), moves[0])
    assert effective_limits(SPECS, state, "a", NOV, LATE) == {"total": 250}
    assert pool(SPECS, state, "org", NOV, LATE) == {"total": 350}
    assert plan_rebalance(SPECS, state, NOV, LATE, consumed, tenant="t", actor="x") == []


def test_rebalance_stays_within_the_tenant_cap() -> None:
    rule = RebalanceRuleSet(tenant="t", occurred_at=EARLY, actor="me", tenant_cap_tokens=200)
    state = apply_allocation_event(AllocationState(), rule)
    moves = plan_rebalance(SPECS, state, NOV, LATE, {}, tenant="t", actor="x")
    assert [(m.from_budget_id, m.tokens) for m in moves] == [("a", 200)]


def test_state_round_trips_through_a_dict() -> None:
    state = apply_allocation_event(AllocationState(), reservation(150))
    state = apply_allocation_event(state, draw(10, state=state))
    assert AllocationState.from_dict(state.to_dict()) == state


def test_the_book_folds_allocation_events_per_tenant_and_ignores_the_rest() -> None:
    book = AllocationBook()
    defined = BudgetDefined(
        budget_id="a", tenant="t", revision=1, occurred_at=EARLY, actor="me", spec=SPECS["a"]
    )
    assert not book.apply(defined)
    assert book.apply(draw(100))
    assert book.limits_at(SPECS, "t", "a", EARLY) == {"total": 500}
    assert book.limits_at(SPECS, "other-tenant", "a", EARLY) == {"total": 400}


def test_rebalance_of_a_long_budget_id_keeps_a_valid_move_id() -> None:
    long_id = "team-" + "x" * 195
    specs = {"org": spec(1000), long_id: spec(400, "org")}
    moves = plan_rebalance(specs, AllocationState(), NOV, LATE, {}, tenant="t", actor="x")
    assert len(moves) == 1 and len(moves[0].move_id) <= 200
    state = apply_allocation_event(AllocationState(), moves[0])
    assert plan_rebalance(specs, state, NOV, LATE, {}, tenant="t", actor="x") == []
