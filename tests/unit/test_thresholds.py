"""Usage percentages and threshold crossings."""

from __future__ import annotations

import orjson
import pytest

from streams.errors import InvalidState
from streams.ledger import PeriodTotals
from streams.thresholds import Crossing, new_crossings, usage_percent


def totals(inp: int, out: int) -> PeriodTotals:
    return PeriodTotals(inp, out, inp + out, 1)


def test_percent_of_the_only_limited_metric() -> None:
    assert usage_percent(totals(30, 45), {"total": 100}) == (75.0, "total")


def test_highest_metric_wins() -> None:
    assert usage_percent(totals(9, 1), {"input": 10, "total": 1000}) == (90.0, "input")
    assert usage_percent(totals(1, 9), {"input": 10, "output": 12}) == (75.0, "output")


def test_ties_go_to_the_first_metric() -> None:
    assert usage_percent(totals(5, 5), {"input": 10, "output": 10}) == (50.0, "input")


def test_zero_limit_is_full_then_infinite() -> None:
    assert usage_percent(totals(0, 0), {"total": 0}) == (100.0, "total")
    assert usage_percent(totals(1, 0), {"total": 0}) == (float("inf"), "total")


def test_no_limits_reads_zero() -> None:
    assert usage_percent(totals(5, 5), {}) == (0.0, "total")


def test_new_crossings_skips_fired_and_unreached() -> None:
    assert new_crossings([75, 90, 100], 92.0, []) == [75, 90]
    assert new_crossings([75, 90, 100], 92.0, [75]) == [90]
    assert new_crossings([75, 90, 100], 74.99, []) == []
    assert new_crossings([100, 75], 100.0, [75, 100]) == []


def test_threshold_fires_at_exactly_its_percentage() -> None:
    assert new_crossings([75], 75.0, ()) == [75]


def test_crossing_round_trips_through_orjson() -> None:
    crossing = Crossing("2026-11", 90, "total", 378, 420, 1_795_000_000_000)
    assert Crossing.from_dict(orjson.loads(orjson.dumps(crossing.to_dict()))) == crossing


def test_bad_stored_crossing_names_the_field() -> None:
    with pytest.raises(InvalidState) as info:
        Crossing.from_dict({"metric": "dollars"})
    assert info.value.field == "metric"
