"""Each tier of the period-end projection, its bands, and the rules every projection keeps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import Period
from streams.forecast.daily import DailySeries, hourly_to_daily
from streams.forecast.errors import ForecastInputError
from streams.forecast.profile import WeekdayProfile
from streams.forecast.project import project_budget, project_period, simulate_days_ahead

OFFICE = np.array([1.3, 1.3, 1.3, 1.3, 1.3, 0.25, 0.25])
JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))


def _office_days(
    first: date, days: int, level: float = 1e6, sigma: float = 0.05, seed: int = 1
) -> DailySeries:
    rng = np.random.default_rng(seed)
    weekdays = (np.arange(days) + first.weekday()) % 7
    values = level * OFFICE[weekdays] * np.exp(rng.normal(0, sigma, days))
    return DailySeries(first, tuple(float(v) for v in values))


def _june(history: DailySeries, as_of: datetime, **kwargs: object):
    consumed = sum(
        v for d, v in zip(_dates(history), history.values, strict=True) if d >= date(2026, 6, 1)
    )
    (projection,) = project_period(
        *JUNE,
        "UTC",
        as_of,
        {"total": history},
        {"total": consumed},
        **kwargs,  # type: ignore[arg-type]
    )
    return projection, consumed


def _dates(series: DailySeries) -> list[date]:
    return [series.start + timedelta(days=i) for i in range(len(series))]


def _truth(first: date, last: date, level: float = 1e6) -> float:
    days = (last - first).days + 1
    return float(sum(level * OFFICE[(first + timedelta(days=i)).weekday()] for i in range(days)))


def test_no_history_projects_what_is_consumed() -> None:
    as_of = datetime(2026, 6, 1, 0, 5, tzinfo=UTC)
    (projection,) = project_period(*JUNE, "UTC", as_of, {}, {"total": 0.0})
    assert projection.method == "no_history"
    assert projection.p50 == projection.band95.high == 0.0


def test_cold_start_borrows_the_tenants_weekday_profile() -> None:
    # Three weekdays of history; the rest of June has many weekends the budget never saw.
    history = _office_days(date(2026, 6, 1), 3, sigma=0.0)
    as_of = datetime(2026, 6, 4, tzinfo=UTC)
    pooled = WeekdayProfile.from_array(OFFICE)
    with_profile, consumed = _june(history, as_of)
    (pooled_projection,) = project_period(
        *JUNE, "UTC", as_of, {"total": history}, {"total": consumed}, {"total": pooled}
    )
    assert with_profile.method == "cold_start_flat"
    assert pooled_projection.method == "cold_start_pooled"
    truth = consumed + _truth(date(2026, 6, 4), date(2026, 6, 30))
    assert pooled_projection.p50 == pytest.approx(truth, rel=0.05)
    assert with_profile.p50 > truth * 1.1  # a flat profile takes every day for a Monday
    assert pooled_projection.band80.low < truth < pooled_projection.band80.high


def test_weekday_average_tier_from_ten_days() -> None:
    history = _office_days(date(2026, 6, 1), 10)
    projection, consumed = _june(history, datetime(2026, 6, 11, tzinfo=UTC))
    assert projection.method == "weekday_average"
    truth = consumed + _truth(date(2026, 6, 11), date(2026, 6, 30))
    assert projection.p50 == pytest.approx(truth, rel=0.05)
    assert projection.band95.low < truth < projection.band95.high


@pytest.mark.parametrize("engine", ["fast", "statsmodels"])
def test_state_space_tier_uses_history_from_before_the_period(engine: str) -> None:
    history = _office_days(date(2026, 4, 1), 61 + 14)  # April, May and half of June
    projection, consumed = _june(history, datetime(2026, 6, 15, tzinfo=UTC), engine=engine)
    assert projection.method == f"ets_{engine}"
    truth = consumed + _truth(date(2026, 6, 15), date(2026, 6, 30))
    assert projection.p50 == pytest.approx(truth, rel=0.03)
    assert projection.band80.low < truth < projection.band80.high
    width80 = projection.band80.high - projection.band80.low
    assert width80 < projection.band95.high - projection.band95.low
    assert width80 < 0.1 * truth


def test_projection_follows_a_level_shift_within_three_days() -> None:
    history = _office_days(date(2026, 5, 1), 31 + 10)
    boosted = list(history.values)
    for i in range(len(boosted) - 3, len(boosted)):
        boosted[i] *= 3.0  # a new pipeline shipped on June 8
    shifted = DailySeries(history.start, tuple(boosted))
    projection, consumed = _june(shifted, datetime(2026, 6, 11, tzinfo=UTC))
    assert projection.method.endswith("+shift")
    truth = consumed + 3.0 * _truth(date(2026, 6, 11), date(2026, 6, 30))
    assert projection.p50 == pytest.approx(truth, rel=0.1)


def test_dst_month_in_new_york_projects_local_days() -> None:
    zone = "America/New_York"
    tz = ZoneInfo(zone)
    first_hour = datetime(2026, 10, 1, tzinfo=tz).astimezone(UTC)
    as_of = datetime(2026, 11, 20, tzinfo=tz)
    hours = (as_of.astimezone(UTC) - first_hour) // timedelta(hours=1)
    series = hourly_to_daily(
        [(first_hour + timedelta(hours=i), 1000.0) for i in range(hours)], zone
    )
    assert series.values[31] == 25_000.0  # November 1st, the day with two 01:00 hours
    consumed = 19 * 24_000 + 1000
    window, (projection,) = project_budget(
        Period(kind="month", timezone=zone), as_of, {"total": series}, {"total": consumed}
    )
    assert window.key == "2026-11"
    assert window.start == datetime(2026, 11, 1, 4, tzinfo=UTC)
    # Eleven local days remain (Nov 20-30), each of 24 hours at 1000 tokens an hour.
    assert projection.p50 == pytest.approx(consumed + 11 * 24_000, rel=0.02)


def test_a_partial_day_counts_only_the_hours_left() -> None:
    history = _office_days(date(2026, 5, 1), 45, sigma=0.0)
    morning = datetime(2026, 6, 15, 6, tzinfo=UTC)
    evening = datetime(2026, 6, 15, 18, tzinfo=UTC)
    early, _ = _june(history, morning)
    late, _ = _june(history, evening)
    monday = 1e6 * OFFICE[0]
    assert early.p50 - late.p50 == pytest.approx(0.5 * monday, rel=0.05)


def test_history_must_reach_the_day_before_the_days_ahead() -> None:
    history = _office_days(date(2026, 5, 1), 10)
    with pytest.raises(ForecastInputError) as info:
        simulate_days_ahead(history, [date(2026, 6, 1)])
    assert info.value.field == "history"


def test_same_input_same_projection() -> None:
    history = _office_days(date(2026, 4, 1), 70)
    first, _ = _june(history, datetime(2026, 6, 10, tzinfo=UTC))
    again, _ = _june(history, datetime(2026, 6, 10, tzinfo=UTC))
    assert first == again


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=1e9), min_size=0, max_size=50),
    consumed=st.floats(min_value=0, max_value=1e10),
    hour=st.integers(min_value=0, max_value=23),
)
def test_bands_are_ordered_and_never_below_consumed(
    values: list[float], consumed: float, hour: int
) -> None:
    as_of = datetime(2026, 6, 12, hour, tzinfo=UTC)
    history = DailySeries(date(2026, 6, 11) - timedelta(days=len(values) - 1), tuple(values))
    (p,) = project_period(*JUNE, "UTC", as_of, {"total": history}, {"total": consumed})
    assert consumed <= p.band95.low <= p.band80.low <= p.p50
    assert p.p50 <= p.band80.high <= p.band95.high
    assert np.isfinite(p.band95.high)


def test_without_a_complete_day_todays_pace_stands_in() -> None:
    as_of = datetime(2026, 6, 10, 12, tzinfo=UTC)  # half of June 10th has passed
    (paced,) = project_period(
        *JUNE, "UTC", as_of, {}, {"total": 500.0}, today_so_far={"total": 500.0}
    )
    assert paced.method == "cold_start_flat"
    # 1000 a day: half of today plus 20 more days.
    assert paced.p50 == pytest.approx(500 + 500 + 20 * 1000, rel=0.1)
    early = datetime(2026, 6, 10, 0, 10, tzinfo=UTC)  # ten minutes say too little
    (unpaced,) = project_period(
        *JUNE, "UTC", early, {}, {"total": 5.0}, today_so_far={"total": 5.0}
    )
    assert unpaced.method == "no_history"


def test_a_perfectly_regular_history_still_has_a_band() -> None:
    history = _office_days(date(2026, 4, 1), 75, sigma=0.0)
    projection, _ = _june(history, datetime(2026, 6, 15, tzinfo=UTC))
    assert projection.band80.high > projection.band80.low


_TODAY = date(2026, 6, 15)
_EVERY_THIRD_IDLE = tuple(0.0 if i % 3 == 2 else 2e6 for i in range(30))


@pytest.mark.parametrize(
    ("values", "method"),
    [
        ((), "cold_start_flat"),  # today's pace stands in for a first day
        ((2e6,) * 3, "cold_start_flat"),
        ((2e6,) * 10, "weekday_average"),
        ((2e6, 0.0, 2e6, 0.0, 0.0, 2e6), "intermittent_sampled"),
        (_EVERY_THIRD_IDLE, "ets_fast+intermittent"),
    ],
)
def test_the_rest_of_a_day_with_usage_is_never_drawn_idle(
    values: tuple[float, ...], method: str
) -> None:
    # Each tier draws days ahead idle on some paths (a budget used so far may be used now and
    # then); today, already used, was one of them, and its remaining hours were projected at 0.
    history = DailySeries(_TODAY - timedelta(days=len(values)), values)
    ahead = [_TODAY + timedelta(days=i) for i in range(16)]
    tier = simulate_days_ahead(history, ahead, today_pace=2e6)
    assert tier.method.startswith(method)
    assert (tier.paths[:, 0] > 0).all()
    assert (tier.paths[:, 1:] == 0).any()  # the days after today may still be idle
    unpaced = simulate_days_ahead(history, ahead) if values else None
    assert unpaced is None or (unpaced.paths[:, 0] == 0).any()  # no usage today: may idle


def test_usage_in_the_first_minutes_of_a_day_already_protects_the_rest_of_it() -> None:
    # Ten minutes are too few for a pace, not for knowing that today has usage. The key is
    # used one day in two: with no usage yet today, the rest of it may well stay idle.
    as_of = datetime(2026, 6, 15, 0, 10, tzinfo=UTC)
    one_day = (datetime(2026, 6, 15, tzinfo=UTC), datetime(2026, 6, 16, tzinfo=UTC))
    history = {"total": DailySeries(date(2026, 6, 9), (2e6, 0.0, 2e6, 0.0, 0.0, 2e6))}
    (used,) = project_period(
        *one_day, "UTC", as_of, history, {"total": 5e4}, today_so_far={"total": 5e4}
    )
    (unused,) = project_period(*one_day, "UTC", as_of, history, {"total": 0.0})
    assert used.band95.low > 5e4 + 5e5
    assert unused.band80.low == 0.0
