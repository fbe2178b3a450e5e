"""Period arithmetic: calendar keys, DST days and months, rolling buckets, resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from schemas.budgets import Period
from streams.errors import BadPeriodKey, NaiveDatetime
from streams.periods import (
    PeriodWindow,
    from_ms,
    next_reset,
    period_of,
    period_of_ms,
    rolling_keys,
    to_ms,
    window_of_key,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_day_key_and_bounds_in_utc() -> None:
    window = period_of(Period(kind="day"), utc(2026, 11, 27, 13, 5))
    assert window == PeriodWindow("2026-11-27", utc(2026, 11, 27), utc(2026, 11, 28))


def test_day_is_local_to_the_zone() -> None:
    # 02:00 UTC on the 27th is still the 26th in New York (UTC-5).
    window = period_of(Period(kind="day", timezone=NY), utc(2026, 11, 27, 2))
    assert window.key == "2026-11-26"
    assert window.start == utc(2026, 11, 26, 5)
    assert window.end == utc(2026, 11, 27, 5)


def test_spring_forward_day_has_23_hours() -> None:
    window = period_of(Period(kind="day", timezone=NY), utc(2026, 3, 8, 12))
    assert window.key == "2026-03-08"
    assert window.end - window.start == timedelta(hours=23)


def test_fall_back_day_has_25_hours() -> None:
    window = period_of(Period(kind="day", timezone=NY), utc(2026, 11, 1, 12))
    assert window.end - window.start == timedelta(hours=25)


def test_lord_howe_half_hour_shift() -> None:
    window = period_of(Period(kind="day", timezone="Australia/Lord_Howe"), utc(2026, 10, 4, 2))
    assert window.key == "2026-10-04"
    assert window.end - window.start == timedelta(hours=23, minutes=30)


def test_dst_month_october_berlin_has_an_extra_hour() -> None:
    window = period_of(Period(kind="month", timezone=BERLIN), utc(2026, 10, 15))
    assert window.key == "2026-10"
    assert window.start == utc(2026, 9, 30, 22)  # local midnight at CEST (+2)
    assert window.end == utc(2026, 10, 31, 23)  # local midnight at CET (+1)
    assert window.end - window.start == timedelta(days=31, hours=1)


def test_dst_month_march_new_york_misses_an_hour() -> None:
    window = period_of(Period(kind="month", timezone=NY), utc(2026, 3, 20))
    assert window.start == utc(2026, 3, 1, 5)
    assert window.end == utc(2026, 4, 1, 4)
    assert window.end - window.start == timedelta(days=31) - timedelta(hours=1)


def test_instant_just_before_local_month_end_is_in_that_month() -> None:
    period = Period(kind="month", timezone=BERLIN)
    assert period_of(period, utc(2026, 10, 31, 22, 59, 59)).key == "2026-10"
    assert period_of(period, utc(2026, 10, 31, 23)).key == "2026-11"


def test_zone_that_skips_midnight_starts_the_day_at_one() -> None:
    # Sao Paulo jumped from 00:00 to 01:00 on 2018-11-04.
    zone = ZoneInfo("America/Sao_Paulo")
    window = period_of(Period(kind="day", timezone="America/Sao_Paulo"), utc(2018, 11, 4, 12))
    assert window.start.astimezone(zone).hour == 1
    assert window.end - window.start == timedelta(hours=23)
    before = period_of(Period(kind="day", timezone="America/Sao_Paulo"), utc(2018, 11, 3, 12))
    assert before.end == window.start


def test_iso_week_starts_monday_and_spans_years() -> None:
    period = Period(kind="week", timezone="UTC")
    window = period_of(period, utc(2027, 1, 1, 9))  # a Friday
    assert window.key == "2026-W53"
    assert window.start == utc(2026, 12, 28)
    assert window.end == utc(2027, 1, 4)
    assert period_of(period, utc(2026, 11, 27)).key == "2026-W48"


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(NaiveDatetime) as info:
        period_of(Period(), datetime(2026, 11, 27, 12))
    assert info.value.field == "at"


def test_period_of_ms_agrees_with_period_of() -> None:
    period = Period(kind="day", timezone="Asia/Kathmandu")
    at = utc(2026, 11, 26, 18, 14, 59, 999000)  # 23:59:59.999 local (+05:45)
    assert period_of_ms(period, to_ms(at)) == period_of(period, at)
    assert period_of_ms(period, to_ms(at) + 1).key == "2026-11-27"


def test_ms_conversions_are_exact() -> None:
    at = utc(2026, 11, 27, 23, 59, 59, 999000)
    assert from_ms(to_ms(at)) == at


def test_rolling_bucket_keys_oldest_first() -> None:
    period = Period(kind="rolling", timezone=NY, window_days=3)
    at = utc(2026, 11, 27, 3)  # the 26th in New York
    assert period_of(period, at).key == "2026-11-26"
    assert rolling_keys(period, at) == ["2026-11-24", "2026-11-25", "2026-11-26"]


def test_calendar_rolling_keys_is_the_period_itself() -> None:
    assert rolling_keys(Period(kind="month"), utc(2026, 11, 27)) == ["2026-11"]


def test_next_reset_calendar_is_window_end() -> None:
    assert next_reset(Period(kind="month", timezone=BERLIN), utc(2026, 10, 5)) == utc(
        2026, 10, 31, 23
    )


def test_next_reset_rolling_is_next_local_midnight() -> None:
    period = Period(kind="rolling", timezone=BERLIN, window_days=7)
    assert next_reset(period, utc(2026, 11, 27, 22, 30)) == utc(2026, 11, 27, 23)
    assert next_reset(period, utc(2026, 11, 27, 23)) == utc(2026, 11, 28, 23)


def test_window_of_key_round_trips_every_unit() -> None:
    for kind in ("day", "week", "month"):
        period = Period(kind=kind, timezone="Pacific/Chatham")
        window = period_of(period, utc(2026, 4, 4, 14))
        assert window_of_key(period, window.key) == window


@pytest.mark.parametrize("key", ["2026-13", "2026-W54", "2026/11/27", "", "2026-02-30"])
def test_bad_period_key_is_named(key: str) -> None:
    with pytest.raises(BadPeriodKey) as info:
        window_of_key(Period(), key)
    assert info.value.key == key


def test_window_round_trips_through_orjson() -> None:
    window = period_of(Period(kind="week", timezone=NY), utc(2026, 11, 27))
    again = PeriodWindow.from_dict(orjson.loads(orjson.dumps(window.to_dict())))
    assert again == window
    assert again.start_ms == window.start_ms
