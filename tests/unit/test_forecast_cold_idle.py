"""New budgets with idle days: short histories of keys used now and then.

With 4 days of a key idle 3 days in 10, the 80% and 95% bands held the month's total 0.59
and 0.77 of the time: a key used on each of its first days was projected as if it would be
used every day, and the level read from three or four amounts had normal, not Student t,
tails. These tests pin the two parts of the fix and the calibration they buy.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from math import exp, lgamma

import numpy as np
import pytest

from streams.forecast.daily import DailySeries
from streams.forecast.profile import WeekdayProfile, pool_profiles, weekday_profile
from streams.forecast.project import project_period


def _new_key(rng: np.random.Generator, idle_share: float, sigma: float, days: int):
    """A key created on the 1st of a month, projected at the end of its `days`-th day.
    Returns (projection, true month total), or None when it has not been used yet."""
    year, month = int(rng.integers(2025, 2027)), int(rng.integers(1, 13))
    length = calendar.monthrange(year, month)[1]
    amounts = np.exp(rng.normal(np.log(10 ** rng.uniform(5, 8)), sigma, length))
    values = np.where(rng.random(length) < idle_share, 0.0, amounts)
    consumed = float(values[:days].sum())
    if consumed == 0:
        return None  # nothing to scale: projected flat by design
    start = datetime(year, month, 1, tzinfo=UTC)
    (projection,) = project_period(
        start,
        start + timedelta(days=length),
        "UTC",
        start + timedelta(days=days),
        {"total": DailySeries(date(year, month, 1), tuple(values[:days]))},
        {"total": consumed},
        n_paths=400,
    )
    return projection, float(values.sum())


def _coverage(idle_share: float, days: int, count: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    held80, held95 = [], []
    for i in range(count):
        found = _new_key(rng, idle_share, (0.2, 0.5)[i % 2], days)
        if found is None:
            continue
        projection, actual = found
        held80.append(projection.band80.low <= actual <= projection.band80.high)
        held95.append(projection.band95.low <= actual <= projection.band95.high)
    return float(np.mean(held80)), float(np.mean(held95))


def test_the_bands_of_a_new_key_idle_three_days_in_ten_hold_its_month() -> None:
    # Old code: 0.61 / 0.76 on these keys (four days of history each), now 0.67 / 0.89. The
    # 80% band stays short: a key used on each of its first four days (one in four of them)
    # is still projected as most likely used every day.
    _, cover95 = _coverage(0.3, 4, 300, seed=31)
    assert cover95 >= 0.84


def test_the_bands_of_new_keys_used_every_day_stay_calibrated() -> None:
    # The price of the fix: keys with no idle day get a few paths with idle days ahead and a
    # Student t level. Their bands must not swell past the targets (80%: 75-88, 95%: 90-98).
    cover80, cover95 = _coverage(0.0, 3, 300, seed=32)
    assert 0.70 <= cover80 <= 0.92
    assert 0.88 <= cover95 <= 0.995


def _log_beta(a: float, b: float) -> float:
    return lgamma(a) + lgamma(b) - lgamma(a + b)


@pytest.mark.parametrize(("days", "intermittent"), [(3, 0.238), (13, 0.135)])
def test_a_history_of_used_days_leaves_some_paths_intermittent(
    days: int, intermittent: float
) -> None:
    from streams.forecast.tiers import unseen_idle_days

    horizon, paths = 60, 4000
    used = unseen_idle_days(days, horizon, paths, np.random.default_rng(5))
    # An intermittent path's rate r ~ Beta(days + 1/2, 1/2) leaves all `horizon` days used
    # with chance E[r ** horizon]; the rest of the paths are used every day.
    a = days + 0.5
    all_used = exp(_log_beta(a + horizon, 0.5) - _log_beta(a, 0.5))
    expected = intermittent * (1.0 - all_used)
    assert float((used == 0).any(axis=1).mean()) == pytest.approx(expected, abs=0.012)
    assert float(used.mean()) == pytest.approx(1.0 - intermittent * 0.5 / (a + 0.5), abs=0.004)


def test_a_key_used_on_each_of_its_three_days_may_yet_idle() -> None:
    values = (2.0e6, 2.4e6, 1.8e6)
    start = datetime(2026, 4, 1, tzinfo=UTC)
    (projection,) = project_period(
        start,
        datetime(2026, 5, 1, tzinfo=UTC),
        "UTC",
        start + timedelta(days=3),
        {"total": DailySeries(date(2026, 4, 1), values)},
        {"total": sum(values)},
    )
    daily = sum(values) / 3 * 30
    assert projection.band95.low < 0.7 * daily  # a key used two days in three is in the band
    assert projection.p50 == pytest.approx(daily, rel=0.05)  # the median still expects daily


def test_the_level_read_from_few_days_has_student_t_tails() -> None:
    from streams.forecast.tiers import simulate_level_profile

    rng = np.random.default_rng(7)
    kwargs = {
        "level": 1000.0,
        "factors": np.ones(7),
        "ahead_weekdays": np.array([0]),
        "sigma_day": 0.0,
        "sigma_level": 0.1,
        "n_paths": 200_000,
        "rng": rng,
        "drift_per_day": 0.0,
    }
    normal = np.log(simulate_level_profile(**kwargs)[:, 0] / 1000.0) / 0.1
    t3 = np.log(simulate_level_profile(**kwargs, dof=3.0)[:, 0] / 1000.0) / 0.1
    assert np.quantile(normal, 0.975) == pytest.approx(1.96, abs=0.03)
    assert np.quantile(t3, 0.975) == pytest.approx(3.18, abs=0.08)  # Student t, 3 dof


def _office_tenant() -> WeekdayProfile:
    """The pooled profile of three office teams, never used on a weekend."""
    week = (1e6,) * 5 + (0.0, 0.0)
    profile = weekday_profile(DailySeries(date(2026, 4, 6), week * 8))
    pooled = pool_profiles([profile] * 3)
    assert pooled is not None and pooled.factors[5] < 0.01
    return pooled


_A_WEEK = (1.42e6, 0.8e6, 0.58e6, 1.01e6, 0.97e6, 2.02e6, 1.45e6)  # Monday to Sunday


@pytest.mark.parametrize(
    ("first", "values", "method"),
    [
        (date(2026, 6, 4), (1e6,) * 3, "cold_start_pooled"),  # Thursday, Friday, Saturday
        (date(2026, 6, 6), (1e6,) * 2, "cold_start_flat"),  # created on a Saturday
        (date(2026, 6, 1), _A_WEEK, "weekday_average"),
    ],
)
def test_a_newcomer_used_on_days_its_siblings_leave_idle_is_not_scaled_up(
    first: date, values: tuple[float, ...], method: str
) -> None:
    # A weekend day with usage was divided by the pooled factor (1e-3): a level a thousand
    # times too high. Now it counts as usage in proportion to its factor, and a history only
    # of such days gets the flat profile. With a week of history the weekend, deseasonalised
    # by that factor, stood out as a level shift on its last two days (346x); the shift is now
    # looked for less the weekday effects shrunk towards the profile.
    as_of = datetime.combine(first + timedelta(days=len(values)), datetime.min.time(), UTC)
    (projection,) = project_period(
        datetime(2026, 6, 1, tzinfo=UTC),
        datetime(2026, 7, 1, tzinfo=UTC),
        "UTC",
        as_of,
        {"total": DailySeries(first, values)},
        {"total": sum(values)},
        {"total": _office_tenant()},
    )
    mean = sum(values) / len(values)
    every_day = sum(values) + mean * (30 - (as_of.date() - date(2026, 6, 1)).days)
    assert projection.method == method
    assert 0.6 * every_day < projection.p50 < 1.3 * every_day
    assert projection.band95.high < 2.0 * every_day


def test_new_keys_idle_six_days_in_ten_with_such_siblings_are_not_projected_at_100x() -> None:
    # The harness's 60%-idle cells: siblings idle as often leave some weekday unused in eight
    # weeks, and the geometric pool carried its 1e-3: MAPE 1500-3800% at 3-4 days of history
    # (against 47-62% for linear extrapolation); the worst of these keys at 1390x. Now 4.7x.
    rng = np.random.default_rng(41)
    worst = 0.0
    for _ in range(150):
        year, month = int(rng.integers(2025, 2027)), int(rng.integers(1, 13))
        length = calendar.monthrange(year, month)[1]
        first = date(year, month, 1)
        values = np.where(rng.random(length) < 0.6, 0.0, 10 ** rng.uniform(5, 8))
        siblings = []
        for _ in range(3):
            used = rng.random(56) >= 0.6
            sibling = DailySeries(first - timedelta(days=52), tuple(np.where(used, 1e6, 0.0)))
            siblings.append(weekday_profile(sibling))
        if values[:4].sum() == 0 or values.sum() == 0:
            continue
        start = datetime(year, month, 1, tzinfo=UTC)
        (projection,) = project_period(
            start,
            start + timedelta(days=length),
            "UTC",
            start + timedelta(days=4),
            {"total": DailySeries(first, tuple(values[:4]))},
            {"total": float(values[:4].sum())},
            {"total": pool_profiles(siblings)},
            n_paths=400,
        )
        worst = max(worst, projection.p50 / float(values.sum()))
    assert worst < 10.0
