"""The one entry point: period-end projections with 80 and 95 percent bands.

The tier follows the budget's own history (complete local days before today):
- under 7 days: recent level * the weekday profile pooled from the tenant's other budgets
  (`cold_start_pooled`; `cold_start_flat` when the tenant has none; `no_history`);
- 7 to 13 days: weekday averages (`weekday_average`);
- 14 days and more: ETS with weekly seasonality (`ets_fast`, or `ets_statsmodels`);
- any history with idle days (no usage on some days; `intermittent.py`): whether a day has
  usage and how much, apart: `intermittent_sampled` under 14 days with usage, then the ETS on
  those days (`ets_fast+intermittent`, also with the statsmodels engine).
A detected level shift appends `+shift`, and growth that stands clear of the noise (from four
weeks of history) `+trend`. History from before the current period is used: the
model does not care where the period started, only where it ends.

Every tier produces simulated daily paths for the days left; each path is summed to the
period's end and added to what is already consumed, and the quantiles of those totals are
the bands. So a projection is never below the consumption so far. Randomness comes from
`seed`, so the same input gives the same projection, on replay too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np

from schemas.budgets import Metric, Period
from schemas.signals import Band, Projection
from streams.forecast.daily import DailySeries, day_fraction_left, local_date, local_days
from streams.forecast.errors import ForecastInputError
from streams.forecast.intermittent import (
    MODEL_DAYS,
    NO_USAGE,
    draw_usage,
    has_idle_days,
    is_used,
    sampled_paths,
    since_first_use,
    usage_outlook,
)
from streams.forecast.profile import WeekdayProfile
from streams.forecast.shifts import (
    LevelShift,
    align_to_last_level,
    deseasonalise,
    detect_shift,
)
from streams.forecast.statespace import fast_paths, statsmodels_paths
from streams.forecast.tiers import EPS, TierPaths, cold_start, weekday_average
from streams.forecast.trend import detect_trend
from streams.periods import PeriodWindow, period_of

Engine = Literal["fast", "statsmodels"]
COLD_START_DAYS = 7
STATESPACE_DAYS = 14
MIN_PACE_SHARE = 1 / 48
"""Today's pace counts once half an hour of the local day has passed."""
MAX_HISTORY_DAYS = 91
"""Thirteen weeks: enough for weekly seasonality, short enough to forget old regimes."""
N_PATHS = 1000
QUANTILES = np.array([0.025, 0.10, 0.50, 0.90, 0.975])


def _statespace(
    values: np.ndarray,
    weekdays: np.ndarray,
    ahead_weekdays: np.ndarray,
    engine: Engine,
    n_paths: int,
    seed: int,
    rng: np.random.Generator,
    used_today: bool = False,
) -> TierPaths:
    """ETS on log consumption, after a level shift and growth are taken out. Days without
    usage are left out of every step (`intermittent`), and each path's days ahead are then
    drawn used or idle; such budgets get the fast engine (statsmodels' ETS leaves no day
    out)."""
    used = is_used(values)
    logs = np.log(values + EPS)
    days = np.flatnonzero(used)
    z = np.full(len(values), np.nan)
    z[days] = deseasonalise(logs[days], weekdays[days], None)
    found = detect_shift(z[days])
    shift = None if found is None else LevelShift(int(days[found.index]), found.delta)
    logs = align_to_last_level(logs, shift)
    z[days] = deseasonalise(logs[days], weekdays[days], None)
    trend = detect_trend(z)
    if trend is not None:
        logs = trend.detrend(logs)
    idle = not used.all()
    if engine == "statsmodels" and not idle:
        log_paths = statsmodels_paths(logs, len(ahead_weekdays), n_paths, seed)
        method = "ets_statsmodels"
    else:
        log_paths, _ = fast_paths(logs, weekdays, ahead_weekdays, n_paths, rng, used)
        method = "ets_fast"
    if trend is not None:
        slopes = trend.slope + trend.stderr * rng.standard_normal(n_paths)
        log_paths = log_paths + trend.offsets(len(ahead_weekdays), slopes)
        method += "+trend"
    paths = np.maximum(np.exp(np.minimum(log_paths, 60.0)) - EPS, 0.0)
    if idle:
        outlook = usage_outlook(values, weekdays, used_today)
        paths = paths * draw_usage(outlook, ahead_weekdays, n_paths, rng, None, used_today)
        method += "+intermittent"
    return TierPaths(paths, method + ("+shift" if shift else ""), shift.index if shift else None)


def simulate_days_ahead(
    history: DailySeries,
    ahead: Sequence[date],
    pooled: WeekdayProfile | None = None,
    engine: Engine = "fast",
    n_paths: int = N_PATHS,
    seed: int = 0,
    today_pace: float | None = None,
    used_today: bool = False,
) -> TierPaths:
    """Daily paths for `ahead` (consecutive local days right after the history).

    `today_pace` (today's tokens so far / share of today elapsed) stands in for a first day
    of history when there is none: a budget created this morning that burns fast must be
    seen to overrun today, not tomorrow. Today (`ahead[0]`) with usage (`used_today`, or a
    pace) is used on every path: its remaining hours are not drawn idle.
    """
    if ahead and len(history) and history.end + timedelta(days=1) != ahead[0]:
        raise ForecastInputError(
            "history",
            f"must end on {ahead[0] - timedelta(days=1)}, the day before the first "
            f"day ahead; it ends on {history.end}",
        )
    recent = history.tail(MAX_HISTORY_DAYS)
    values, weekdays = recent.array(), recent.weekdays()
    ahead_weekdays = np.array([d.weekday() for d in ahead], dtype=int)
    rng = np.random.default_rng(seed)
    if not ahead:
        return TierPaths(np.zeros((n_paths, 0)), "period_over")
    values, weekdays = since_first_use(values, weekdays)
    paced = today_pace is not None and today_pace > 0
    used_today = used_today or paced
    if not is_used(values).any() and paced:
        values, weekdays = np.array([max(float(today_pace or 0), NO_USAGE)]), ahead_weekdays[:1]
    if has_idle_days(values) and is_used(values).sum() < MODEL_DAYS:
        paths = sampled_paths(values, weekdays, ahead_weekdays, n_paths, rng, used_today)
        return TierPaths(paths, "intermittent_sampled")
    # From here a history with idle days has MODEL_DAYS of usage, so it reaches the ETS
    if len(values) < COLD_START_DAYS:
        return cold_start(values, weekdays, ahead_weekdays, pooled, n_paths, rng, used_today)
    if len(values) < STATESPACE_DAYS:
        return weekday_average(values, weekdays, ahead_weekdays, pooled, n_paths, rng, used_today)
    return _statespace(values, weekdays, ahead_weekdays, engine, n_paths, seed, rng, used_today)


def projection_from_paths(
    tier: TierPaths, today_left: float, consumed: float, metric: Metric, as_of: datetime
) -> Projection:
    """Sum each path to the period's end, add consumption so far, take the quantiles."""
    paths = tier.paths
    if paths.shape[1]:
        weights = np.ones(paths.shape[1])
        weights[0] = today_left
        totals = consumed + paths @ weights
    else:
        totals = np.full(max(paths.shape[0], 1), consumed)
    lo95, lo80, p50, hi80, hi95 = (max(float(q), consumed) for q in np.quantile(totals, QUANTILES))
    return Projection(
        metric=metric,
        p50=p50,
        band80=Band(low=lo80, high=hi80),
        band95=Band(low=lo95, high=hi95),
        method=tier.method,
        as_of=as_of,
    )


def project_period(
    window_start: datetime,
    window_end: datetime,
    zone: str,
    as_of: datetime,
    histories: Mapping[Metric, DailySeries],
    consumed: Mapping[Metric, float],
    pooled: Mapping[Metric, WeekdayProfile | None] | None = None,
    engine: Engine = "fast",
    n_paths: int = N_PATHS,
    seed: int = 0,
    today_so_far: Mapping[Metric, float] | None = None,
) -> list[Projection]:
    """Project each metric of `consumed` to the end of the window [start, end) at `as_of`.

    `histories` holds complete local days; anything from today on is cut, and the days
    between its last day and yesterday count as zero usage (no charge means no usage).
    `today_so_far` (tokens of today until `as_of`) gives a budget without a complete day
    its pace; and a day with usage is not drawn idle for its remaining hours on any path.
    """
    today = local_date(as_of, zone)
    ahead = [d for d in local_days(window_start, window_end, zone) if d >= today]
    left = day_fraction_left(as_of, zone) if ahead and ahead[0] == today else 1.0
    result = []
    for metric, so_far in consumed.items():
        if so_far < 0:
            raise ForecastInputError(f"consumed.{metric}", f"must be non-negative, got {so_far}")
        history = _until_yesterday(histories.get(metric, DailySeries(today, ())), today)
        profile = (pooled or {}).get(metric)
        elapsed = 1.0 - left
        pace = None
        tokens_today = (today_so_far or {}).get(metric, 0.0) if ahead[:1] == [today] else 0.0
        if tokens_today and elapsed >= MIN_PACE_SHARE:
            pace = tokens_today / elapsed
        used = tokens_today >= NO_USAGE
        tier = simulate_days_ahead(history, ahead, profile, engine, n_paths, seed, pace, used)
        result.append(projection_from_paths(tier, left, float(so_far), metric, as_of))
    return result


def _until_yesterday(history: DailySeries, today: date) -> DailySeries:
    yesterday = today - timedelta(days=1)
    if not len(history):
        return DailySeries(today, ())
    if history.end >= yesterday:
        return history.until(yesterday)
    gap = (yesterday - history.end).days
    return DailySeries(history.start, history.values + (0.0,) * gap)


def project_budget(
    period: Period,
    as_of: datetime,
    histories: Mapping[Metric, DailySeries],
    consumed: Mapping[Metric, float],
    pooled: Mapping[Metric, WeekdayProfile | None] | None = None,
    engine: Engine = "fast",
    n_paths: int = N_PATHS,
    seed: int = 0,
) -> tuple[PeriodWindow, list[Projection]]:
    """Project to the end of the period that contains `as_of`, in the budget's zone.

    For a rolling period the window is today's day bucket: the projection is the rolling
    consumption at the next reset, when the oldest bucket drops out.
    """
    window = period_of(period, as_of)
    projections = project_period(
        window.start,
        window.end,
        period.timezone,
        as_of,
        histories,
        consumed,
        pooled,
        engine,
        n_paths,
        seed,
    )
    return window, projections
