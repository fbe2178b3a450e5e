"""Weekday profiles: how much of a typical week's consumption falls on each weekday.

A budget with under a week of its own history cannot know that its Mondays are twice its
Sundays, but the tenant's other budgets usually share the rhythm of the same office. Their
profiles are pooled (arithmetic mean per weekday) and lent to the newcomer.

Arithmetic, not geometric: a weekday one sibling never used has its factor at FLOOR, and a
geometric mean carries that 1e-3 into the pool (one idle sibling in three took the weekday to a
tenth), so a newcomer used on it was deseasonalised as if it had used a thousand times its
level. The arithmetic mean is the share a budget drawn at random from the tenant would put on
the weekday: a weekday some siblings use keeps a real share, and one no sibling uses stays near
zero. A factor is at most 7 (a week's usage on one weekday), so one odd sibling moves the pool
by at most 7 / n.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from streams.forecast.daily import DailySeries
from streams.forecast.errors import ForecastInputError

FLOOR = 1e-3
"""Smallest factor kept: a weekday with no usage at all still must not divide by zero."""


@dataclass(frozen=True)
class WeekdayProfile:
    """Multiplicative factors Monday..Sunday with mean 1: day value = weekly level * factor."""

    factors: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.factors) != 7:
            raise ForecastInputError("factors", f"must have 7 weekdays, got {len(self.factors)}")
        if any(not np.isfinite(f) or f <= 0 for f in self.factors):
            raise ForecastInputError("factors", "must be finite and positive")

    @classmethod
    def flat(cls) -> WeekdayProfile:
        return cls((1.0,) * 7)

    @classmethod
    def from_array(cls, raw: np.ndarray) -> WeekdayProfile:
        clipped = np.maximum(np.asarray(raw, dtype=float), FLOOR)
        return cls(tuple(float(x) for x in clipped / clipped.mean()))

    def array(self) -> np.ndarray:
        return np.asarray(self.factors, dtype=float)


def weekday_profile(series: DailySeries, min_days: int = 14) -> WeekdayProfile | None:
    """The budget's own profile from its last whole weeks, or None with under `min_days`.

    Whole weeks only, so every weekday is counted equally often and a trend does not tilt
    the profile towards the weekdays that happen to come last.
    """
    weeks = min(len(series), 56) // 7
    if weeks * 7 < min_days or weeks == 0:
        return None
    recent = series.tail(weeks * 7)
    values = recent.array()
    if values.sum() <= 0:
        return None
    per_day = np.zeros(7)
    np.add.at(per_day, recent.weekdays(), values)
    return WeekdayProfile.from_array(per_day / weeks)


def pool_profiles(profiles: Iterable[WeekdayProfile | None]) -> WeekdayProfile | None:
    """The tenant's shared weekly rhythm: arithmetic mean of its budgets' profiles."""
    arrays = [p.array() for p in profiles if p is not None]
    if not arrays:
        return None
    return WeekdayProfile.from_array(np.mean(arrays, axis=0))
