"""Period arithmetic in a budget's own time zone.

A calendar period (day, ISO week, month) begins at local midnight of its first day in the
budget's IANA zone, so a day may last 23 or 25 hours and a month's boundaries move with DST.
Where a zone skips midnight, the period begins at the first instant that exists that day.
A rolling period is made of day buckets in its zone; its consumption at an instant is the sum of
the last `window_days` buckets.

Windows are computed once per (unit, zone, local date) and cached: the ledger asks for one per
charge line, so `period_of_ms` answers from a small slot cache in a few dictionary operations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from schemas.budgets import Period
from streams.errors import BadPeriodKey, InvalidState, NaiveDatetime

Unit = Literal["day", "week", "month"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_SLOT_MS = 900_000  # 15 minutes: every zone offset in use today is a multiple of it
_SLOT_CACHE_MAX = 200_000
_DAY_KEY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK_KEY = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH_KEY = re.compile(r"^(\d{4})-(\d{2})$")


def to_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise NaiveDatetime("at", at)
    return (at - EPOCH) // _ONE_MS


def from_ms(at_ms: int) -> datetime:
    """The UTC-aware instant `at_ms` milliseconds after the Unix epoch."""
    return EPOCH + timedelta(milliseconds=at_ms)


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One period, half-open `[start, end)`, both UTC-aware; `*_ms` mirror them as epoch ms."""

    key: str
    start: datetime
    end: datetime
    start_ms: int = field(init=False, repr=False, compare=False)
    end_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start_ms", to_ms(self.start))
        object.__setattr__(self, "end_ms", to_ms(self.end))

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeriodWindow:
        try:
            start = datetime.fromisoformat(data["start"]).astimezone(UTC)
            end = datetime.fromisoformat(data["end"]).astimezone(UTC)
            return cls(key=str(data["key"]), start=start, end=end)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidState("PeriodWindow", "(payload)", str(exc)) from None


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The zone object for an IANA name, looked up once."""
    return ZoneInfo(name)


def unit_of(period: Period) -> Unit:
    """The calendar unit a period is counted in: rolling periods count in day buckets."""
    kind = period.kind
    if kind == "rolling":
        return "day"
    return kind


def _unit_start(unit: Unit, day: date) -> date:
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _unit_end(unit: Unit, start: date) -> date:
    if unit == "day":
        return start + timedelta(days=1)
    if unit == "week":
        return start + timedelta(days=7)
    return date(start.year + 1, 1, 1) if start.month == 12 else date(start.year, start.month + 1, 1)


def _key(unit: Unit, start: date) -> str:
    if unit == "day":
        return start.isoformat()
    if unit == "week":
        iso = start.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    return f"{start.year:04d}-{start.month:02d}"


def local_midnight(tz: str, day: date) -> datetime:
    """The first instant of local date `day` in `tz`, in UTC.

    A wall time in a DST gap resolves (fold=0) with the offset before the gap, which is exactly
    the gap's first instant, so a zone that skips midnight starts the day at 01:00.
    """
    return datetime(day.year, day.month, day.day, tzinfo=zone(tz)).astimezone(UTC)


@lru_cache(maxsize=65_536)
def _window(unit: Unit, tz: str, start_ordinal: int) -> tuple[PeriodWindow, int, int]:
    """The window of the unit beginning on local date `start_ordinal`, with both date ordinals."""
    start = date.fromordinal(start_ordinal)
    end = _unit_end(unit, start)
    window = PeriodWindow(_key(unit, start), local_midnight(tz, start), local_midnight(tz, end))
    return window, start_ordinal, end.toordinal()


def _containing(unit: Unit, tz: str, day_ordinal: int) -> tuple[PeriodWindow, int, int]:
    start = _unit_start(unit, date.fromordinal(day_ordinal))
    return _window(unit, tz, start.toordinal())


def _window_at(unit: Unit, tz: str, at: datetime) -> PeriodWindow:
    local_day = at.astimezone(zone(tz)).date().toordinal()
    window, start_ord, end_ord = _containing(unit, tz, local_day)
    # Only a zone that turns its clock back across midnight can make the local date disagree
    # with the boundaries; the boundaries win, so periods never overlap.
    while at < window.start:
        window, start_ord, end_ord = _containing(unit, tz, start_ord - 1)
    while at >= window.end:
        window, start_ord, end_ord = _window(unit, tz, end_ord)
    return window


def period_of(period: Period, at: datetime) -> PeriodWindow:
    """The period `at` falls in; for a rolling period, its day bucket. `at` must be aware."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise NaiveDatetime("at", at)
    return _window_at(unit_of(period), period.timezone, at)


_slots: dict[tuple[str, str, int], PeriodWindow] = {}


def period_of_ms(period: Period, at_ms: int) -> PeriodWindow:
    """`period_of` for an epoch-millisecond instant: the hot path's entry point."""
    unit = unit_of(period)
    slot = (unit, period.timezone, at_ms // _SLOT_MS)
    window = _slots.get(slot)
    if window is not None and window.start_ms <= at_ms < window.end_ms:
        return window
    window = _window_at(unit, period.timezone, from_ms(at_ms))
    if len(_slots) >= _SLOT_CACHE_MAX:
        _slots.clear()
    _slots[slot] = window
    return window


@lru_cache(maxsize=65_536)
def parse_key(key: str) -> tuple[Unit, date]:
    """The unit and first local date a period key names (its format says its unit)."""
    try:
        if match := _DAY_KEY.match(key):
            return "day", date(int(match[1]), int(match[2]), int(match[3]))
        if match := _WEEK_KEY.match(key):
            return "week", date.fromisocalendar(int(match[1]), int(match[2]), 1)
        if match := _MONTH_KEY.match(key):
            return "month", date(int(match[1]), int(match[2]), 1)
    except ValueError:
        pass
    raise BadPeriodKey(key)


def window_of_key(period: Period, key: str) -> PeriodWindow:
    """The window a period key names, in the period's zone (to fill `period_start/end`)."""
    unit, start = parse_key(key)
    return _window(unit, period.timezone, start.toordinal())[0]


@lru_cache(maxsize=65_536)
def day_key(ordinal: int) -> str:
    """The key of the day bucket for a proleptic Gregorian ordinal."""
    return date.fromordinal(ordinal).isoformat()


def rolling_keys(period: Period, at: datetime) -> list[str]:
    """The bucket keys whose sum is the rolling consumption at `at`, oldest first.

    For a calendar period this is just the key of the period `at` falls in.
    """
    window = period_of(period, at)
    if period.kind != "rolling" or period.window_days is None:
        return [window.key]
    last = parse_key(window.key)[1].toordinal()
    return [day_key(o) for o in range(last - period.window_days + 1, last + 1)]


def next_reset(period: Period, at: datetime) -> datetime:
    """When the consumption that counts at `at` next drops: the calendar window's end, or for a
    rolling window the next local midnight (when its oldest bucket drops out)."""
    return period_of(period, at).end
