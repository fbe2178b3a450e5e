"""The forecast backtest's synthetic usage, drawn from a known law, and the best forecasts that
law allows.

Because the law is known, two reference forecasts bound what any forecaster can reach on these
series. Both give the point that minimises the expected absolute percentage error: the
median of the simulated month totals, weighted by one over each total.
- `oracle`: told everything drawn up to the origin (level, growth, weekday profile, noise,
  whether the level has shifted yet) and the law of what comes (noise, spikes, the chance of
  a shift later on). No forecaster can beat it on average: given those, the days seen say
  nothing more about the days to come.
- `informed`: told the law, the weekday profile, the noise and the day of the last shift, it
  must read the level and the growth from the days since that shift (a robust Bayesian
  regression with the law's growth as its prior). That is the floor for a forecaster that must
  read level and growth from data, however well it finds shifts and weekday rhythms.
  With `growth_prior=False` it is not told how growth is spread across series, and reads each
  series' growth from that series' days alone, as a forecaster of one budget must. That is no
  strict floor (other ways to read growth from the data do about as well, none much better),
  but it says what is left once the law's growth is not known.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

SPIKE_CHANCE = 0.02
"""Of each day being a spike: usage times a factor drawn uniformly from `SPIKE_FACTORS`."""
SPIKE_FACTORS = (2.0, 5.0)
SHIFT_CHANCE = 0.5
"""Of a series having one level shift, on a day drawn uniformly from its day `SHIFT_FIRST`
to `SHIFT_LAST_GAP` days before its end, by one of `SHIFT_FACTORS`."""
SHIFT_FIRST = 20
SHIFT_LAST_GAP = 5
SHIFT_FACTORS = (0.4, 0.6, 1.6, 2.5)
GROWTH_MEAN, GROWTH_SD = 0.02, 0.04
"""Log growth per 30 days, drawn per series."""
SIMULATED = 2000
"""Month totals simulated per origin by the reference forecasts."""


@dataclass(frozen=True)
class Truth:
    """What the generator drew for one synthetic series."""

    level: np.ndarray
    """Log level per day, growth and shift included, before noise and weekday profile."""
    profile: np.ndarray
    """Weekday factor per day."""
    sigma: float
    growth: float
    """Log growth per 30 days."""
    shift_day: int | None
    """First day on the shifted level, if the series has a shift."""


@dataclass(frozen=True)
class Series:
    name: str
    kind: str
    start: date
    values: np.ndarray
    tenant: str = ""
    truth: Truth | None = None


def synthetic(seed: int, count: int, days: int = 240) -> list[Series]:
    """Daily token usage with the features that break a linear month-to-date projection.

    Budgets come in tenants of four that share a weekday rhythm (one office), so the
    cold-start tier has a pooled profile to borrow.
    """
    rng = np.random.default_rng(seed)
    result = []
    strength = 0.0
    for i in range(count):
        if i % 4 == 0:
            strength = float(rng.choice([0.0, 0.2, 0.5, 0.8]))
        start = date(2025, 1, 1) + timedelta(days=int(rng.integers(0, 60)))
        t = np.arange(days)
        weekday = (t + start.weekday()) % 7
        profile = np.where(weekday >= 5, 1.0 - strength, 1.0 + strength * 2 / 5)
        profile = profile * np.exp(rng.normal(0, 0.05, 7))[weekday]
        growth = float(rng.normal(GROWTH_MEAN, GROWTH_SD))
        level = np.log(10 ** rng.uniform(5, 8)) + growth * t / 30
        shift_day = None
        if rng.random() < SHIFT_CHANCE:
            shift_day = int(rng.integers(SHIFT_FIRST, days - SHIFT_LAST_GAP))
            level[shift_day:] += np.log(rng.choice(SHIFT_FACTORS))
        sigma = float(rng.choice([0.05, 0.12, 0.25]))
        values = np.exp(level + rng.normal(0, sigma, days)) * profile
        spikes = rng.random(days) < SPIKE_CHANCE
        values[spikes] *= rng.uniform(*SPIKE_FACTORS, spikes.sum())
        truth = Truth(level, profile, sigma, growth, shift_day)
        tenant = f"tenant-{i // 4}"
        result.append(Series(f"synthetic-{i}", "synthetic", start, values, tenant, truth))
    return result


def _best_point(
    truth: Truth,
    length: int,
    cut: int,
    end: int,
    consumed: float,
    levels: np.ndarray,
    growths: np.ndarray,
    rng: np.random.Generator,
) -> float:
    """The point with the least expected absolute percentage error, given a draw of the level
    on the origin's last day and of the growth per path, and the law of what comes.
    `length`: the series' length in days."""
    ahead = np.arange(cut, end)
    steps = (ahead - cut + 1) / 30
    logs = levels[:, None] + growths[:, None] * steps[None, :]
    logs = logs + rng.normal(0, truth.sigma, logs.shape)
    if truth.shift_day is None or truth.shift_day >= cut:
        logs = logs + _future_shifts(length, cut, ahead, len(levels), rng)
    days = np.exp(logs) * truth.profile[ahead]
    spikes = rng.random(days.shape) < SPIKE_CHANCE
    days = np.where(spikes, days * rng.uniform(*SPIKE_FACTORS, days.shape), days)
    totals = np.sort(consumed + days.sum(axis=1))
    weights = np.cumsum(1 / totals)
    return float(totals[np.searchsorted(weights, weights[-1] / 2)])


def _future_shifts(
    days: int, cut: int, ahead: np.ndarray, paths: int, rng: np.random.Generator
) -> np.ndarray:
    """Log offsets per path and day ahead, for a series not (yet) shifted by `cut`."""
    first, last = max(cut, SHIFT_FIRST), days - SHIFT_LAST_GAP
    later = max(last - first, 0) / (days - SHIFT_LAST_GAP - SHIFT_FIRST)
    if not later:
        return np.zeros((paths, len(ahead)))
    chance = SHIFT_CHANCE * later / (1 - SHIFT_CHANCE + SHIFT_CHANCE * later)
    shifts = rng.random(paths) < chance
    at = rng.integers(first, last, paths)
    factors = np.log(rng.choice(SHIFT_FACTORS, paths))
    result: np.ndarray = (shifts[:, None] & (ahead[None, :] >= at[:, None])) * factors[:, None]
    return result


def oracle(series: Series, cut: int, end: int, consumed: float) -> float | None:
    """Told the true state at the origin and the law of what comes; see the module."""
    if series.truth is None:
        return None
    truth = series.truth
    rng = np.random.default_rng(cut)
    levels = np.full(SIMULATED, truth.level[cut - 1])
    growths = np.full(SIMULATED, truth.growth)
    return _best_point(truth, len(series.values), cut, end, consumed, levels, growths, rng)


def informed(
    series: Series, cut: int, end: int, consumed: float, growth_prior: bool = True
) -> float | None:
    """Reads level and growth from the days since the last shift; see the module."""
    if series.truth is None:
        return None
    truth = series.truth
    since = 0
    if truth.shift_day is not None and truth.shift_day < cut:
        since = truth.shift_day
    days = np.arange(since, cut)
    logs = np.log(series.values[days]) - np.log(truth.profile[days])
    design = np.column_stack([np.ones(len(days)), (days - (cut - 1)) / 30.0])
    if growth_prior:
        prior_mean, slope_precision = np.array([0.0, GROWTH_MEAN]), 1 / GROWTH_SD**2
    else:  # a slope from under two weeks is noise: none is read
        prior_mean, slope_precision = np.zeros(2), 0.0 if len(days) >= 14 else 1e12
    prior_precision = np.diag([0.0, slope_precision])
    weights = np.ones(len(days))
    for _ in range(8):  # Huber weights, so that spikes do not lift the level
        precision = design.T @ (design * weights[:, None]) / truth.sigma**2 + prior_precision
        covariance = np.linalg.inv(precision)
        mean = covariance @ (
            design.T @ (weights * logs) / truth.sigma**2 + prior_precision @ prior_mean
        )
        excess = np.abs(logs - design @ mean) / (1.5 * truth.sigma)
        weights = np.where(excess <= 1, 1.0, 1 / np.maximum(excess, 1e-12))
    rng = np.random.default_rng(cut)
    draws = rng.multivariate_normal(mean, covariance, SIMULATED)
    length = len(series.values)
    return _best_point(truth, length, cut, end, consumed, draws[:, 0], draws[:, 1], rng)
