"""Weekday profiles of a budget, and the tenant's pooled profile for newcomers."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from streams.forecast.daily import DailySeries
from streams.forecast.errors import ForecastInputError
from streams.forecast.profile import WeekdayProfile, pool_profiles, weekday_profile

MONDAY = date(2026, 3, 2)
OFFICE = np.array([1.3, 1.3, 1.3, 1.3, 1.3, 0.25, 0.25])


def _weeks(factors: np.ndarray, weeks: int, level: float = 1000.0) -> DailySeries:
    return DailySeries(MONDAY, tuple(float(level * f) for f in np.tile(factors, weeks)))


def test_profile_recovers_the_weekday_rhythm() -> None:
    profile = weekday_profile(_weeks(OFFICE, 4))
    assert profile is not None
    assert np.allclose(profile.array(), OFFICE / OFFICE.mean())


def test_profile_needs_two_weeks() -> None:
    assert weekday_profile(_weeks(OFFICE, 1)) is None
    assert weekday_profile(DailySeries(MONDAY, (0.0,) * 21)) is None


def test_pooled_profile_is_the_arithmetic_mean_of_the_tenants_budgets() -> None:
    strong = WeekdayProfile.from_array(OFFICE)
    flat = WeekdayProfile.flat()
    pooled = pool_profiles([strong, flat, None])
    assert pooled is not None
    assert np.allclose(pooled.array(), (strong.array() + 1.0) / 2.0)
    assert pool_profiles([None]) is None


def test_a_weekday_one_sibling_never_used_keeps_the_others_share() -> None:
    # Two siblings used every day, one never on Saturdays (floored at 1e-3). The geometric
    # mean took Saturday to a tenth of a day (0.10); a newcomer used on it was then read at ten
    # times its level, and with two such siblings at a hundred.
    no_saturday = WeekdayProfile.from_array(np.array([1, 1, 1, 1, 1, 0, 1.0]))
    pooled = pool_profiles([WeekdayProfile.flat(), WeekdayProfile.flat(), no_saturday])
    assert pooled is not None
    assert pooled.factors[5] == pytest.approx(2.0 / 3.0, rel=1e-2)  # two of three used it
    pooled = pool_profiles([WeekdayProfile.flat(), no_saturday, no_saturday])
    assert pooled is not None
    assert pooled.factors[5] == pytest.approx(1.0 / 3.0, rel=1e-2)


def test_profile_rejects_a_wrong_length_or_a_zero() -> None:
    with pytest.raises(ForecastInputError):
        WeekdayProfile((1.0,) * 6)
    with pytest.raises(ForecastInputError):
        WeekdayProfile((0.0,) + (1.0,) * 6)
    assert min(WeekdayProfile.from_array(np.array([0, 1, 1, 1, 1, 1, 1.0])).factors) > 0
