"""Property: a period boundary falls where the zone's own calendar says it does.

The expected answer is computed independently of streams.periods: the local calendar date from
zoneinfo, and the boundary checked as "this instant is on the first local date of the period,
and one microsecond earlier is not".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import Period
from streams.periods import next_reset, period_of, period_of_ms, to_ms

ZONES = [
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/Sao_Paulo",
    "Asia/Tehran",
    "UTC",
]
TINY = timedelta(microseconds=1)

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC)
)


def expected_bounds(kind: str, local: date) -> tuple[str, date, date]:
    if kind in ("day", "rolling"):
        return local.isoformat(), local, local + timedelta(days=1)
    if kind == "week":
        year, week, weekday = local.isocalendar()
        start = local - timedelta(days=weekday - 1)
        return f"{year}-W{week:02d}", start, start + timedelta(days=7)
    start = local.replace(day=1)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return f"{start.year}-{start.month:02d}", start, end


def first_instant_of(moment: datetime, zone: ZoneInfo, day: date) -> bool:
    return moment.astimezone(zone).date() == day and (moment - TINY).astimezone(zone).date() < day


@settings(max_examples=200, deadline=None)
@given(
    at=instants,
    tz=st.sampled_from(ZONES),
    kind=st.sampled_from(["day", "week", "month", "rolling"]),
)
def test_boundaries_follow_the_local_calendar(at: datetime, tz: str, kind: str) -> None:
    zone = ZoneInfo(tz)
    period = Period(kind=kind, timezone=tz, window_days=7 if kind == "rolling" else None)
    key, start_day, end_day = expected_bounds(kind, at.astimezone(zone).date())

    window = period_of(period, at)

    assert window.key == key
    assert window.start <= at < window.end
    assert first_instant_of(window.start, zone, start_day)
    assert first_instant_of(window.end, zone, end_day)
    assert next_reset(period, at) == window.end
    assert period_of_ms(period, to_ms(at)) == period_of(
        period, at.replace(microsecond=at.microsecond // 1000 * 1000)
    )


@settings(max_examples=200, deadline=None)
@given(at=instants, tz=st.sampled_from(ZONES))
def test_consecutive_days_tile_time(at: datetime, tz: str) -> None:
    period = Period(kind="day", timezone=tz)
    window = period_of(period, at)
    following = period_of(period, window.end)
    assert following.start == window.end
    assert timedelta(hours=22) <= window.end - window.start <= timedelta(hours=26)
