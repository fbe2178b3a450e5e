"""The ledger fold: event time, watermarks, late lines, pruning, crossings, rolling windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.budgets import BudgetSpec, Limits, Period
from streams.budgets import Budget
from streams.errors import BudgetIdMismatch, InvalidState, OutOfOrderCharge
from streams.ledger import (
    ChargeLine,
    ChargeResult,
    LedgerState,
    PeriodTotals,
    apply_charge,
    totals_at,
)
from streams.periods import to_ms

DAY = timedelta(days=1)


def ms(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))


def budget(period: Period | None = None, **spec: Any) -> Budget:
    fields: dict[str, Any] = {"name": "b", "limits": Limits(total_tokens=100)}
    if period is not None:
        fields["period"] = period
    fields.update(spec)
    return Budget("b1", "acme", 1, BudgetSpec(**fields))


def line(offset: int, at: int, inp: int = 1, out: int = 0, index: int = 0) -> ChargeLine:
    return ChargeLine((offset, index), at, inp, out)


def charge(
    state: LedgerState,
    lines: list[ChargeLine],
    b: Budget | None = None,
    partition: int = 0,
    late: timedelta = 2 * DAY,
    **kw: Any,
) -> ChargeResult:
    return apply_charge(state, b or budget(), partition, lines, late, **kw)


NOV = ms(2026, 11, 20)


def test_lines_are_summed_into_their_period() -> None:
    result = charge(LedgerState("b1"), [line(1, NOV, 3, 4), line(2, NOV + 1, 5, 6, index=0)])
    assert result.state.periods == {"2026-11": PeriodTotals(8, 10, 18, 2)}
    assert (result.applied, result.skipped) == (2, 0)
    assert result.state.watermarks == {0: (2, 0)}
    assert result.state.event_time_high_ms == NOV + 1


def test_redelivered_charge_changes_nothing() -> None:
    lines = [line(1, NOV), line(2, NOV), line(3, NOV)]
    first = charge(LedgerState("b1"), lines)
    again = charge(first.state, lines)
    assert again.state == first.state
    assert (again.applied, again.skipped) == (0, 3)


def test_redelivery_cut_elsewhere_applies_only_the_new_lines() -> None:
    first = charge(LedgerState("b1"), [line(o, NOV) for o in range(1, 6)])
    second = charge(first.state, [line(o, NOV) for o in range(3, 9)])
    assert (second.applied, second.skipped) == (3, 3)
    assert second.state.periods["2026-11"].events == 8


def test_positions_inside_an_envelope_are_distinct() -> None:
    lines = [line(7, NOV, index=0), line(7, NOV, index=1), line(7, NOV, index=2)]
    state = charge(LedgerState("b1"), lines).state
    again = charge(state, [line(7, NOV, index=2), line(8, NOV)])
    assert (again.applied, again.skipped) == (1, 1)
    assert again.state.periods["2026-11"].events == 4


def test_partitions_have_their_own_watermarks() -> None:
    state = charge(LedgerState("b1"), [line(5, NOV)], partition=0).state
    state = charge(state, [line(1, NOV)], partition=1).state
    assert state.watermarks == {0: (5, 0), 1: (1, 0)}
    assert state.periods["2026-11"].events == 2


def test_out_of_order_charge_is_refused_and_state_kept() -> None:
    start = LedgerState("b1")
    with pytest.raises(OutOfOrderCharge) as info:
        charge(start, [line(5, NOV), line(4, NOV)])
    assert (info.value.position, info.value.previous) == ((4, 0), (5, 0))
    assert start == LedgerState("b1")


def test_other_budgets_state_is_refused() -> None:
    with pytest.raises(BudgetIdMismatch):
        charge(LedgerState("b2"), [line(1, NOV)])


def test_event_time_charges_the_period_it_happened_in() -> None:
    state = charge(LedgerState("b1"), [line(1, ms(2026, 12, 1, 6))]).state
    result = charge(state, [line(2, ms(2026, 11, 30, 23, 59))])
    assert result.applied == 1
    assert set(result.state.periods) == {"2026-11", "2026-12"}


def test_event_time_follows_the_budget_zone() -> None:
    berlin = budget(Period(kind="month", timezone="Europe/Berlin"))
    state = charge(LedgerState("b1"), [line(1, ms(2026, 11, 30, 23, 30))], b=berlin).state
    assert set(state.periods) == {"2026-12"}  # 00:30 on Dec 1 in Berlin


def test_late_line_is_counted_returned_and_not_charged() -> None:
    now = ms(2026, 12, 3, 12)  # November ended Dec 1 00:00, 2.5 days before
    state = charge(LedgerState("b1"), [line(1, now)]).state
    late_line = line(2, NOV, 7, 3)
    result = charge(state, [late_line])
    assert result.late == [late_line]
    assert (result.applied, result.state.late_events, result.state.late_tokens) == (0, 1, 10)
    assert "2026-11" not in result.state.periods
    assert result.state.watermarks[0] == (2, 0)
    again = charge(result.state, [late_line])  # redelivered: not counted twice
    assert again.state.late_events == 1


def test_late_window_edge_is_inclusive() -> None:
    state = charge(LedgerState("b1"), [line(1, ms(2026, 12, 3))]).state  # end + 2 days exactly
    assert charge(state, [line(2, NOV)]).applied == 1
    state = charge(LedgerState("b1"), [line(1, ms(2026, 12, 3) + 1)]).state
    assert charge(state, [line(2, NOV)]).applied == 0


def test_lateness_is_decided_by_event_time_not_arrival() -> None:
    # The same lines decide the same way on replay, whatever the wall clock says.
    lines = [line(1, ms(2026, 12, 5)), line(2, NOV), line(3, ms(2026, 12, 2))]
    first = charge(LedgerState("b1"), lines)
    replay = charge(LedgerState("b1"), lines)
    assert first == replay
    assert [late.position for late in first.late] == [(2, 0)]


def test_late_window_of_a_charge_still_open_within_it() -> None:
    state = charge(LedgerState("b1"), [line(1, ms(2026, 12, 1, 12))]).state
    result = charge(state, [line(2, NOV, 5)])
    assert result.applied == 1
    assert result.state.periods["2026-11"].input == 5


def test_old_periods_are_pruned_with_their_crossings() -> None:
    state = charge(LedgerState("b1"), [line(1, NOV, 80)]).state
    assert state.crossed == {"2026-11": [75]}
    state = charge(state, [line(2, ms(2026, 12, 2))]).state
    assert "2026-11" in state.periods  # still inside the late window
    state = charge(state, [line(3, ms(2026, 12, 3, 1))]).state
    assert set(state.periods) == {"2026-12"}
    assert state.crossed == {}


def test_crossings_fire_once_at_the_line_that_crossed() -> None:
    result = charge(
        LedgerState("b1"), [line(1, NOV, 50), line(2, NOV + 1, 30), line(3, NOV + 2, 20)]
    )
    fired = [(c.threshold, c.crossed_at_ms, c.consumed, c.limit) for c in result.crossings]
    assert fired == [(75, NOV + 1, 80, 100), (90, NOV + 2, 100, 100), (100, NOV + 2, 100, 100)]
    assert result.state.crossed == {"2026-11": [75, 90, 100]}
    more = charge(result.state, [line(4, NOV + 3, 500)])
    assert more.crossings == []


def test_each_period_fires_its_own_crossings() -> None:
    state = charge(LedgerState("b1"), [line(1, NOV, 80)]).state
    result = charge(state, [line(2, ms(2026, 12, 1), 80)])
    assert [(c.period_key, c.threshold) for c in result.crossings] == [("2026-12", 75)]


def test_effective_limits_override_the_spec() -> None:
    result = charge(LedgerState("b1"), [line(1, NOV, 40)], effective_limits={"total": 50})
    assert [(c.threshold, c.limit) for c in result.crossings] == [(75, 50)]


def test_crossing_names_the_metric_closest_to_its_limit() -> None:
    b = budget(limits=Limits(input_tokens=10, total_tokens=1000))
    result = charge(LedgerState("b1"), [line(1, NOV, 9, 0)], b=b)
    assert [(c.threshold, c.metric, c.consumed, c.limit) for c in result.crossings] == [
        (75, "input", 9, 10),
        (90, "input", 9, 10),
    ]


def test_rolling_window_sums_day_buckets() -> None:
    rolling = budget(Period(kind="rolling", window_days=3), thresholds=[50, 100])
    day1, day3, day4 = ms(2026, 11, 1, 12), ms(2026, 11, 3, 12), ms(2026, 11, 4, 12)
    result = charge(LedgerState("b1"), [line(1, day1, 40), line(2, day3, 20)], b=rolling)
    assert set(result.state.periods) == {"2026-11-01", "2026-11-03"}
    assert [(c.period_key, c.threshold, c.consumed) for c in result.crossings] == [
        ("2026-11-03", 50, 60)
    ]
    state = result.state
    assert totals_at(state, rolling, datetime(2026, 11, 3, tzinfo=UTC)).total == 60
    assert totals_at(state, rolling, datetime(2026, 11, 4, tzinfo=UTC)).total == 20  # day 1 out
    result = charge(state, [line(3, day4, 60)], b=rolling)
    assert [(c.period_key, c.threshold, c.consumed) for c in result.crossings] == [
        ("2026-11-04", 50, 80)
    ]


def test_rolling_late_line_counts_in_later_windows_of_the_same_charge() -> None:
    rolling = budget(Period(kind="rolling", window_days=2), thresholds=[100])
    lines = [line(1, ms(2026, 11, 2, 12), 60), line(2, ms(2026, 11, 1, 12), 10)]
    lines.append(line(3, ms(2026, 11, 2, 13), 30))
    result = charge(LedgerState("b1"), lines, b=rolling)
    assert [(c.period_key, c.consumed) for c in result.crossings] == [("2026-11-02", 100)]


def test_rolling_keeps_buckets_a_late_window_still_needs() -> None:
    rolling = budget(Period(kind="rolling", window_days=3))
    state = charge(LedgerState("b1"), [line(1, ms(2026, 11, 1, 12))], b=rolling).state
    state = charge(state, [line(2, ms(2026, 11, 5, 12))], b=rolling, late=2 * DAY).state
    # Bucket Nov 3 (ends Nov 4, +2 days) may still get lines, and its window holds Nov 1.
    assert "2026-11-01" in state.periods
    state = charge(state, [line(3, ms(2026, 11, 6, 12))], b=rolling, late=2 * DAY).state
    assert "2026-11-01" not in state.periods


def test_state_and_result_round_trip_through_orjson() -> None:
    result = charge(LedgerState("b1"), [line(1, NOV, 80, 1)], partition=3)
    stored = orjson.loads(orjson.dumps(result.state.to_dict()))
    assert LedgerState.from_dict(stored) == result.state
    payload = orjson.loads(orjson.dumps(result.to_dict()))
    assert payload["crossings"][0]["threshold"] == 75


def test_charge_line_wire_form() -> None:
    row = [12, 3, NOV, 100, 20]
    assert ChargeLine.from_wire(row) == ChargeLine((12, 3), NOV, 100, 20)
    assert ChargeLine.from_wire(row).to_wire() == row
    assert ChargeLine.from_dict(ChargeLine.from_wire(row).to_dict()).to_wire() == row


def test_bad_stored_state_names_the_field() -> None:
    with pytest.raises(InvalidState) as info:
        LedgerState.from_dict({"budget_id": "b1", "periods": {}})
    assert info.value.field == "watermarks"


def test_empty_charge_returns_the_same_state() -> None:
    state = LedgerState("b1")
    assert charge(state, []).state is state
