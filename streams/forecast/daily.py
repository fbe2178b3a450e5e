"""Consumption per local day in the budget's zone, the unit every forecast tier works in.

A budget's days are local days: in `America/New_York` the first Sunday of November has 25
hours and the second Sunday of March 23, so hours are grouped by their local date, never by
24-hour blocks of UTC. A day without usage is a zero, not a gap: the series is contiguous.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from streams.forecast.errors import ForecastInputError


@dataclass(frozen=True)
class DailySeries:
    """Complete local days of consumption, oldest first; `values[0]` is the day `start`."""

    start: date
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if any(not np.isfinite(v) or v < 0 for v in self.values):
            raise ForecastInputError("values", "must be finite and non-negative token counts")

    def __len__(self) -> int:
        return len(self.values)

    @property
    def end(self) -> date:
        """The last day in the series (the day before `start` when the series is empty)."""
        return self.start + timedelta(days=len(self.values) - 1)

    def weekdays(self) -> np.ndarray:
        """Weekday of each value, Monday = 0, as the profile and the models index them."""
        return (np.arange(len(self.values)) + self.start.weekday()) % 7

    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=float)

    def tail(self, days: int) -> DailySeries:
        """The last `days` days (all of them when the series is shorter)."""
        keep = self.values[-days:] if days > 0 else ()
        return DailySeries(self.start + timedelta(days=len(self.values) - len(keep)), keep)

    def until(self, last: date) -> DailySeries:
        """The days up to and including `last`."""
        count = max(0, min(len(self.values), (last - self.start).days + 1))
        return DailySeries(self.start, self.values[:count])


def _require_aware(field: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ForecastInputError(field, f"must carry a UTC offset, got naive {value!r}")


def local_date(at: datetime, zone: str) -> date:
    """The budget-zone calendar date of an instant."""
    _require_aware("at", at)
    return at.astimezone(ZoneInfo(zone)).date()


def hourly_to_daily(
    hours: Iterable[tuple[datetime, float]],
    zone: str,
    first: date | None = None,
    last: date | None = None,
) -> DailySeries:
    """Sum (hour start, tokens) pairs into the local days of `zone`.

    `first`/`last` widen the series with zero days (a budget that had no usage yesterday still
    had a yesterday). Hours outside [first, last] are an input error, not silently dropped.
    """
    tz = ZoneInfo(zone)
    totals: dict[date, float] = {}
    for at, tokens in hours:
        _require_aware("hour", at)
        if tokens < 0:
            raise ForecastInputError("tokens", f"must be non-negative, got {tokens!r} at {at}")
        day = at.astimezone(tz).date()
        totals[day] = totals.get(day, 0.0) + float(tokens)
    if not totals and (first is None or last is None):
        return DailySeries(first or last or date(1970, 1, 1), ())
    start = first if first is not None else min(totals)
    end = last if last is not None else max(totals)
    outside = [d for d in totals if d < start or d > end]
    if outside:
        raise ForecastInputError("hours", f"fall on {min(outside)}, outside {start}..{end}")
    span = (end - start).days + 1
    values = tuple(totals.get(start + timedelta(days=i), 0.0) for i in range(max(span, 0)))
    return DailySeries(start, values)


def local_days(start: datetime, end: datetime, zone: str) -> list[date]:
    """The local dates a half-open window [start, end) covers, in order."""
    _require_aware("start", start)
    _require_aware("end", end)
    if end <= start:
        raise ForecastInputError("end", f"must be after start {start}, got {end}")
    first = local_date(start, zone)
    last = local_date(end - timedelta(microseconds=1), zone)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_fraction_left(as_of: datetime, zone: str) -> float:
    """The share of the local day still to come at `as_of`, using the day's true length.

    On a 25-hour day the hour after 01:00 happens twice; measuring in UTC seconds between
    the local midnights keeps the share exact.
    """
    _require_aware("as_of", as_of)
    tz = ZoneInfo(zone)
    day = as_of.astimezone(tz).date()
    following = day + timedelta(days=1)
    # Same-tzinfo subtraction is wall-clock arithmetic in Python; compare in UTC instead.
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    end = datetime(following.year, following.month, following.day, tzinfo=tz).astimezone(UTC)
    length = (end - start).total_seconds()
    return max(0.0, min(1.0, (end - as_of.astimezone(UTC)).total_seconds() / length))
