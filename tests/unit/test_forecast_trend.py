"""Growth week after week: found when clear of the noise, carried into the projection."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from streams.forecast.daily import DailySeries
from streams.forecast.project import project_period
from streams.forecast.trend import Trend, detect_trend

OFFICE = np.array([1.3, 1.3, 1.3, 1.3, 1.3, 0.25, 0.25])
JUNE = (datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
FIRST = date(2026, 3, 18)  # 75 days of history before June 1, then 14 of June
GROWTH = 0.3 / 30  # 30 percent a month, in logs


def _days(growth: float, sigma: float = 0.05, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = (date(2026, 6, 15) - FIRST).days
    weekdays = (np.arange(count) + FIRST.weekday()) % 7
    return 1e6 * OFFICE[weekdays] * np.exp(growth * np.arange(count) + rng.normal(0, sigma, count))


def _june_total(growth: float) -> float:
    count = (date(2026, 7, 1) - FIRST).days
    weekdays = (np.arange(count) + FIRST.weekday()) % 7
    values = 1e6 * OFFICE[weekdays] * np.exp(growth * np.arange(count))
    return float(values[(date(2026, 6, 1) - FIRST).days :].sum())


def _project(values: np.ndarray):
    june = (date(2026, 6, 1) - FIRST).days
    (projection,) = project_period(
        *JUNE,
        "UTC",
        datetime(2026, 6, 15, tzinfo=UTC),
        {"total": DailySeries(FIRST, tuple(float(v) for v in values))},
        {"total": float(values[june:].sum())},
    )
    return projection


def test_steady_growth_is_found_with_its_rate() -> None:
    logs = np.log(_days(GROWTH)) - np.log(OFFICE[(np.arange(89) + FIRST.weekday()) % 7])
    trend = detect_trend(logs)
    assert trend is not None
    assert trend.slope == pytest.approx(GROWTH, rel=0.15)


def test_flat_noisy_usage_has_no_trend() -> None:
    for seed in range(5):
        logs = np.random.default_rng(seed).normal(12.0, 0.25, 63)
        assert detect_trend(logs) is None


def test_too_few_weeks_have_no_trend() -> None:
    assert detect_trend(np.arange(27, dtype=float)) is None


def test_detrend_keeps_the_last_day_and_lifts_older_days() -> None:
    logs = np.array([1.0, 2.0, 3.0])
    assert np.allclose(Trend(1.0, 0.1).detrend(logs), [3.0, 3.0, 3.0])


def test_a_growing_budget_is_projected_with_its_growth() -> None:
    projection = _project(_days(GROWTH))
    truth = _june_total(GROWTH)
    assert projection.method.endswith("+trend")
    assert projection.p50 == pytest.approx(truth, rel=0.03)
    assert projection.band80.low < truth < projection.band80.high


def test_a_flat_budget_keeps_the_level_only_model() -> None:
    projection = _project(_days(0.0, sigma=0.2))
    assert "+trend" not in projection.method
    assert projection.p50 == pytest.approx(_june_total(0.0), rel=0.08)


def test_offsets_are_damped_and_one_row_per_slope() -> None:
    trend = Trend(0.01, 0.001)
    single = trend.offsets(10)
    assert single[0] == pytest.approx(0.01 * 0.98)
    assert np.all(np.diff(single) < 0.01)  # each day adds less than the undamped slope
    rows = trend.offsets(10, np.array([0.0, 0.02]))
    assert rows.shape == (2, 10) and np.allclose(rows[0], 0.0)


def test_noise_with_idle_days_left_out_has_no_trend() -> None:
    # Idle days (NaN) leave four or five weekly means, which can happen to sit on a line.
    found = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        logs = rng.normal(12.0, 0.5, 56)
        logs[rng.random(56) < 0.45] = np.nan
        found += detect_trend(logs) is not None
    assert found <= 4  # 1 in 50 at most
