"""Hourly usage to local days: DST days have 23 and 25 hours, gaps are zero days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from streams.forecast.daily import (
    DailySeries,
    day_fraction_left,
    hourly_to_daily,
    local_days,
)
from streams.forecast.errors import ForecastInputError


def _hours(first_utc: datetime, count: int, tokens: float = 1.0) -> list[tuple[datetime, float]]:
    return [(first_utc + timedelta(hours=i), tokens) for i in range(count)]


def test_new_york_fall_back_day_has_25_hours() -> None:
    # 2026-10-31 00:00 EDT is 04:00 UTC; three local days span 24 + 25 + 24 hours.
    hours = _hours(datetime(2026, 10, 31, 4, tzinfo=UTC), 24 + 25 + 24)
    series = hourly_to_daily(hours, "America/New_York")
    assert series.start == date(2026, 10, 31)
    assert series.values == (24.0, 25.0, 24.0)


def test_berlin_spring_forward_day_has_23_hours() -> None:
    # 2026-03-28 00:00 CET is 2026-03-27 23:00 UTC.
    hours = _hours(datetime(2026, 3, 27, 23, tzinfo=UTC), 24 + 23 + 24)
    series = hourly_to_daily(hours, "Europe/Berlin")
    assert series.start == date(2026, 3, 28)
    assert series.values == (24.0, 23.0, 24.0)


def test_days_without_usage_are_zeros_and_bounds_widen() -> None:
    hours = [(datetime(2026, 5, 1, 12, tzinfo=UTC), 5.0), (datetime(2026, 5, 4, 12, tzinfo=UTC), 7)]
    series = hourly_to_daily(hours, "UTC", first=date(2026, 4, 30), last=date(2026, 5, 5))
    assert series.values == (0.0, 5.0, 0.0, 0.0, 7.0, 0.0)
    assert series.end == date(2026, 5, 5)


def test_hours_outside_the_bounds_are_an_error_not_dropped() -> None:
    hours = [(datetime(2026, 5, 9, 12, tzinfo=UTC), 5.0)]
    with pytest.raises(ForecastInputError) as info:
        hourly_to_daily(hours, "UTC", first=date(2026, 5, 1), last=date(2026, 5, 5))
    assert info.value.field == "hours"


def test_naive_hour_and_negative_tokens_name_the_field() -> None:
    with pytest.raises(ForecastInputError) as naive:
        hourly_to_daily([(datetime(2026, 5, 1, 12), 1.0)], "UTC")
    assert naive.value.field == "hour"
    with pytest.raises(ForecastInputError) as negative:
        hourly_to_daily([(datetime(2026, 5, 1, 12, tzinfo=UTC), -1.0)], "UTC")
    assert negative.value.field == "tokens"


def test_local_days_of_a_new_york_november() -> None:
    tz = ZoneInfo("America/New_York")
    start = datetime(2026, 11, 1, tzinfo=tz)
    end = datetime(2026, 12, 1, tzinfo=tz)
    days = local_days(start, end, "America/New_York")
    assert days[0] == date(2026, 11, 1)
    assert days[-1] == date(2026, 11, 30)
    assert len(days) == 30


def test_day_fraction_left_uses_the_true_day_length() -> None:
    tz = ZoneInfo("America/New_York")
    # 2026-11-01 06:30 UTC is 01:30 EST, the second 01:30 of the 25-hour day: 2.5 h elapsed.
    at = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert at.astimezone(tz).hour == 1
    assert day_fraction_left(at, "America/New_York") == pytest.approx(22.5 / 25)
    # Berlin's 23-hour day: at 12:00 CEST (10:00 UTC) 11 of 23 hours have passed.
    noon = datetime(2026, 3, 29, 10, tzinfo=UTC)
    assert day_fraction_left(noon, "Europe/Berlin") == pytest.approx(12 / 23)


def test_series_rejects_negative_values_and_slices_by_date() -> None:
    with pytest.raises(ForecastInputError):
        DailySeries(date(2026, 1, 1), (1.0, -2.0))
    series = DailySeries(date(2026, 1, 1), (1.0, 2.0, 3.0, 4.0))
    assert series.tail(2) == DailySeries(date(2026, 1, 3), (3.0, 4.0))
    assert series.until(date(2026, 1, 2)).values == (1.0, 2.0)
    assert list(series.weekdays()) == [3, 4, 5, 6]  # 2026-01-01 is a Thursday
