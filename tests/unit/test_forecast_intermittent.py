"""Budgets with idle days: whether a day has usage and how much are projected apart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from schemas.signals import Projection
from streams.forecast.daily import DailySeries
from streams.forecast.intermittent import usage_outlook
from streams.forecast.project import project_period

APRIL = (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
AS_OF = datetime(2026, 4, 15, tzinfo=UTC)  # 14 days of April seen, 16 ahead
TYPICAL = float(np.exp(12.0 + 0.4**2 / 2))  # mean tokens of a day with usage


def _project(values: np.ndarray, first: date) -> Projection:
    april = (date(2026, 4, 1) - first).days
    (projection,) = project_period(
        *APRIL,
        "UTC",
        AS_OF,
        {"total": DailySeries(first, tuple(float(v) for v in values))},
        {"total": float(values[april:].sum())},
    )
    return projection


def _used_now_and_then(days: int, idle_share: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amounts = np.exp(rng.normal(12.0, 0.4, days))
    return np.where(rng.random(days) < idle_share, 0.0, amounts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_key_idle_one_day_in_three_is_projected_at_its_usage(seed: int) -> None:
    # On the old log-scale model such budgets came out at several times what they used.
    first = date(2026, 1, 4)
    values = _used_now_and_then((AS_OF.date() - first).days, 0.3, seed)
    projection = _project(values, first)
    consumed = float(values[(date(2026, 4, 1) - first).days :].sum())
    expected = consumed + 16 * 0.7 * TYPICAL
    assert projection.method.startswith("ets_fast+intermittent")
    assert projection.p50 == pytest.approx(expected, rel=0.15)
    assert projection.band80.low < expected < projection.band80.high


def test_a_budget_gone_quiet_is_projected_about_flat() -> None:
    first = date(2026, 1, 4)
    values = _used_now_and_then((AS_OF.date() - first).days, 0.0, 4)
    values[-16:] = 0.0  # a retired feature: nothing for sixteen days
    consumed = float(values[(date(2026, 4, 1) - first).days :].sum())
    for seed in range(12):  # the band edges do not flip between quiet and active paths
        (projection,) = project_period(
            *APRIL,
            "UTC",
            AS_OF,
            {"total": DailySeries(first, tuple(float(v) for v in values))},
            {"total": consumed},
            seed=seed,
        )
        assert projection.p50 < consumed + TYPICAL
        assert projection.band80.high > consumed + 5 * TYPICAL  # it may still come back


def test_usage_today_ends_the_quiet() -> None:
    weekdays = np.arange(60) % 7
    values = _used_now_and_then(60, 0.0, 11)
    values[-16:] = 0.0
    assert usage_outlook(values, weekdays).quiet > 0.5
    assert usage_outlook(values, weekdays, used_today=True).quiet == 0.0


def test_back_from_the_christmas_holiday_the_office_is_projected_as_before() -> None:
    first = date(2025, 10, 1)
    count = (date(2026, 1, 5) - first).days  # history through Sunday Jan 4
    weekdays = (np.arange(count) + first.weekday()) % 7
    values = np.where(weekdays < 5, _used_now_and_then(count, 0.0, 12), 0.0)
    values[(date(2025, 12, 24) - first).days :] = 0.0
    assert usage_outlook(values, weekdays).quiet > 0.5  # ten idle days: maybe stopped
    back = usage_outlook(values, weekdays, used_today=True)  # Monday's first charge
    assert back.quiet == 0.0
    assert np.all(back.share[:5] > 0.9)  # the holiday does not lower the weekdays ahead


def test_an_office_budget_keeps_its_weekends_idle() -> None:
    first = date(2026, 1, 4)
    count = (AS_OF.date() - first).days
    weekdays = (np.arange(count) + first.weekday()) % 7
    values = np.where(weekdays < 5, _used_now_and_then(count, 0.0, 5), 0.0)
    share = usage_outlook(values, weekdays).share
    assert np.all(share[:5] > 0.9) and np.all(share[5:] < 0.1)
    ahead = [date(2026, 4, 15) + timedelta(days=i) for i in range(16)]
    workdays = sum(1 for d in ahead if d.weekday() < 5)
    consumed = float(values[(date(2026, 4, 1) - first).days :].sum())
    recent = values[-28:]
    expected = consumed + workdays * float(recent[recent > 0].mean())  # weekends add nothing
    assert _project(values, first).p50 == pytest.approx(expected, rel=0.08)


def test_two_idle_tuesdays_of_an_irregular_budget_say_little() -> None:
    weekdays = np.arange(14) % 7
    used = np.ones(14)
    used[[1, 8, 3, 12]] = 0.0  # both Tuesdays idle, and two other days
    share = usage_outlook(used * 1e5, weekdays).share
    assert share[1] > 0.4  # not 0: four idle days in fourteen fall where they fall


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_a_new_budget_with_idle_days_is_resampled_not_logged(seed: int) -> None:
    first = date(2026, 4, 5)  # ten days of history
    values = _used_now_and_then(10, 0.3, seed)
    values[-1] = TYPICAL  # used yesterday: not gone quiet
    projection = _project(values, first)
    consumed = float(values.sum())
    expected = consumed + 16 * 0.7 * TYPICAL
    assert projection.method == "intermittent_sampled"
    assert projection.p50 == pytest.approx(expected, rel=0.35)
    assert projection.band95.low < expected < projection.band95.high


def test_usage_that_began_mid_history_is_not_read_as_idle_days() -> None:
    # Leading zeros (the output metric of a budget that began with embeddings) are days
    # before the budget began: counted as idle, they put the projection at 0.4x.
    first = date(2026, 1, 4)
    values = _used_now_and_then((AS_OF.date() - first).days, 0.0, 9)
    values[:-8] = 0.0
    projection = _project(values, first)
    expected = float(values.sum()) + 16 * float(values[-8:].mean())
    assert projection.p50 == pytest.approx(expected, rel=0.15)


def test_a_long_weekend_is_not_a_retirement() -> None:
    # Good Friday to Easter Monday idle: four days, then the office is back.
    first = date(2026, 1, 4)
    count = (AS_OF.date() - first).days
    weekdays = (np.arange(count) + first.weekday()) % 7
    values = np.where(weekdays < 5, _used_now_and_then(count, 0.0, 10), 0.0)
    values[-4:] = 0.0  # Sat Apr 11 .. Tue Apr 14
    outlook = usage_outlook(values, weekdays)
    assert outlook.quiet < 0.5  # the band holds a stop, the p50 does not expect one
    ahead = [date(2026, 4, 15) + timedelta(days=i) for i in range(16)]
    workdays = sum(1 for d in ahead if d.weekday() < 5)
    consumed = float(values[(date(2026, 4, 1) - first).days :].sum())
    expected = consumed + workdays * float(values[values > 0][-20:].mean())
    assert _project(values, first).p50 > 0.85 * expected


def test_a_budget_whose_only_usage_is_today_is_paced() -> None:
    first = date(2026, 4, 1)
    (projection,) = project_period(
        *APRIL,
        "UTC",
        datetime(2026, 4, 15, 12, tzinfo=UTC),
        {"total": DailySeries(first, (0.0,) * 14)},
        {"total": 3e6},
        today_so_far={"total": 3e6},
    )
    assert projection.p50 > 3e6 + 10 * 6e6  # 6M a day from today on, not nothing


def test_a_step_in_a_budget_with_idle_days_is_followed() -> None:
    # Weekday medians over the days with usage took in part of the step, the series zigzagged
    # and hid it: the band reached forty times the new level.
    first = date(2026, 1, 14)
    count = (AS_OF.date() - first).days
    rng = np.random.default_rng(13)
    values = np.exp(rng.normal(12.0, 0.05, count))
    values[count // 2 :] *= 5.0
    values[rng.random(count) < 0.3] = 0.0
    values[-1] = 5.0 * np.exp(12.0)
    projection = _project(values, first)
    consumed = float(values[(date(2026, 4, 1) - first).days :].sum())
    used = values[count // 2 :]
    expected = consumed + 16 * float(np.mean(used > 0)) * float(used[used > 0].mean())
    assert "+shift" in projection.method
    assert projection.p50 == pytest.approx(expected, rel=0.15)
    assert projection.band95.high < 1.6 * expected
