"""The short-history tiers: under a week (pooled profile) and one to two weeks (weekday means).

Both describe the days ahead as level * weekday factor, with two kinds of uncertainty: the
level itself (estimated from few days, and free to drift over the rest of the period; one
draw per path, so it moves every remaining day together) and day-to-day noise (one draw per
day). Drawing the level once per path is what makes the band of the period sum honest:
independent per-day intervals would shrink as the period gets longer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.forecast.profile import WeekdayProfile
from streams.forecast.shifts import align_to_last_level, deseasonalise, detect_shift

PRIOR_DAY_SIGMA = 0.30
"""Day-to-day noise (log scale) assumed before a budget has shown its own."""
PRIOR_WEIGHT = 3.0
"""How many days of evidence the prior noise is worth when blended with observed noise."""
DRIFT_PER_DAY = 0.02
"""Random-walk drift of the level per day ahead (log scale): usage rarely holds still."""
EPS = 1.0


@dataclass(frozen=True)
class TierPaths:
    """Simulated daily consumption for the days ahead, shape (paths, days), and how."""

    paths: np.ndarray
    method: str
    shift_index: int | None = None


def _blend_sigma(residuals: np.ndarray) -> float:
    """Observed log noise, shrunk towards the prior when there are only a few residuals."""
    count = len(residuals)
    observed = float(np.sum(residuals**2)) if count else 0.0
    return float(np.sqrt((observed + PRIOR_WEIGHT * PRIOR_DAY_SIGMA**2) / (count + PRIOR_WEIGHT)))


def simulate_level_profile(
    level: float,
    factors: np.ndarray,
    ahead_weekdays: np.ndarray,
    sigma_day: float,
    sigma_level: float,
    n_paths: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paths of level * factor[weekday] with a per-path level shock and per-day noise."""
    horizon = len(ahead_weekdays)
    level_shock = rng.standard_normal((n_paths, 1)) * sigma_level
    drift = np.cumsum(rng.standard_normal((n_paths, horizon)), axis=1) * DRIFT_PER_DAY
    noise = rng.standard_normal((n_paths, horizon)) * sigma_day
    # Lognormal draws centred on the median: the p50 of a day stays level * factor.
    base = level * factors[ahead_weekdays]
    result: np.ndarray = base * np.exp(level_shock + drift + noise)
    return result


def cold_start(
    values: np.ndarray,
    weekdays: np.ndarray,
    ahead_weekdays: np.ndarray,
    pooled: WeekdayProfile | None,
    n_paths: int,
    rng: np.random.Generator,
) -> TierPaths:
    """Under 7 days: recent level (deseasonalised with the pooled profile) * that profile."""
    profile = pooled if pooled is not None else WeekdayProfile.flat()
    method = "cold_start_pooled" if pooled is not None else "cold_start_flat"
    factors = profile.array()
    if len(values) == 0:
        return TierPaths(np.zeros((n_paths, len(ahead_weekdays))), "no_history")
    logs = np.log(values + EPS) - np.log(factors[weekdays])
    level_log = float(np.mean(logs))
    residuals = logs - level_log
    sigma_day = _blend_sigma(residuals * np.sqrt(len(logs) / max(len(logs) - 1, 1)))
    sigma_level = sigma_day / np.sqrt(len(logs))
    paths = simulate_level_profile(
        np.exp(level_log), factors, ahead_weekdays, sigma_day, sigma_level, n_paths, rng
    )
    return TierPaths(np.maximum(paths - EPS, 0.0), method)


def weekday_average(
    values: np.ndarray,
    weekdays: np.ndarray,
    ahead_weekdays: np.ndarray,
    pooled: WeekdayProfile | None,
    n_paths: int,
    rng: np.random.Generator,
) -> TierPaths:
    """7 to 13 days: each weekday's own average (in logs), after aligning any level shift."""
    logs = np.log(values + EPS)
    seasonal = None if pooled is None else np.log(pooled.array())
    shift = detect_shift(deseasonalise(logs, weekdays, seasonal))
    logs = align_to_last_level(logs, shift)
    means = np.zeros(7)
    counts = np.zeros(7)
    np.add.at(means, weekdays, logs)
    np.add.at(counts, weekdays, 1.0)
    means = means / np.maximum(counts, 1.0)
    residuals = logs - means[weekdays]
    repeated = counts[weekdays] >= 2
    # A weekday seen twice leaves one degree of freedom: scale its residuals up by sqrt(2).
    sigma_day = _blend_sigma(residuals[repeated] * np.sqrt(2.0))
    sigma_level = sigma_day / np.sqrt(len(values) / 7.0 * 2.0)
    level = float(np.exp(np.mean(means)))
    factors = np.exp(means - np.mean(means))
    paths = simulate_level_profile(
        level, factors, ahead_weekdays, sigma_day, sigma_level, n_paths, rng
    )
    method = "weekday_average" + ("+shift" if shift else "")
    return TierPaths(np.maximum(paths - EPS, 0.0), method, shift.index if shift else None)
