"""Growth: usage that rises (or falls) week after week, as a product is adopted or retired.

A level-only model follows growth one step behind and projects the rest of the period flat,
so a growing budget is projected low every month. The trend is measured on weekly means of
the deseasonalised log series (a week sums out the weekday rhythm, and a median of pairwise
slopes ignores a spike week), and kept only when it stands clear of week-to-week noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_WEEKS = 4
MIN_DAYS_A_WEEK = 4
"""A week with idle days (NaN: `intermittent`) counts with at least four days of usage."""
MAX_WEEKS = 8
"""Eight weeks: long enough to see a slope through noise, short enough to follow a change."""
T_MIN = 6
"""A slope counts when it is this many standard errors from zero. So high because a robust
spread of four to eight weekly means is itself unsure; set on the backtest's development seed
(1), where a lower bar fitted trends to noise and made flat budgets worse."""
DAMPING = 0.98
"""Per day ahead: a trend measured over weeks is trusted less the further it is carried."""


@dataclass(frozen=True)
class Trend:
    """Log growth per day at the end of the history, and its standard error."""

    slope: float
    stderr: float

    def offsets(self, horizon: int, slopes: np.ndarray | None = None) -> np.ndarray:
        """Damped cumulative growth for the days ahead; one row per slope in `slopes`."""
        damped = np.cumsum(DAMPING ** np.arange(1, horizon + 1))
        if slopes is None:
            result: np.ndarray = self.slope * damped
            return result
        rows: np.ndarray = slopes[:, None] * damped[None, :]
        return rows

    def detrend(self, log_values: np.ndarray) -> np.ndarray:
        """The history as if it had grown at this slope: the last day is kept where it is."""
        days_before_last = np.arange(len(log_values))[::-1]
        result: np.ndarray = log_values + self.slope * days_before_last
        return result


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    i, j = np.triu_indices(len(x), k=1)
    return float(np.median((y[j] - y[i]) / (x[j] - x[i])))


def means_of_all(weeks: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each week's mean over its known days (NaN for a week with none)."""
    counts = known.sum(axis=1)
    sums = np.where(known, weeks, 0.0).sum(axis=1)
    means: np.ndarray = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means


def detect_trend(deseasonalised: np.ndarray) -> Trend | None:
    """The growth of the last up to eight whole weeks, if it is clear of the noise. NaN
    marks a day without usage: left out of its week's mean."""
    weeks = min(len(deseasonalised) // 7, MAX_WEEKS)
    if weeks < MIN_WEEKS:
        return None
    tail = deseasonalised[len(deseasonalised) - weeks * 7 :].reshape(weeks, 7)
    known = np.isfinite(tail)
    kept = known.sum(axis=1) >= MIN_DAYS_A_WEEK
    if kept.sum() < MIN_WEEKS:
        return None
    means = means_of_all(tail, known)[kept]
    centres = (np.arange(weeks) * 7.0)[kept]
    slope = _theil_sen(centres, means)
    residuals = means - (np.median(means - slope * centres) + slope * centres)
    noise = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    # Four to eight weekly means can happen to sit on a line; none is surer than its days
    # make it (so few weeks, with idle days left out, fitted trends to noise).
    within = (tail - means_of_all(tail, known)[:, None])[known]
    day_noise = 1.4826 * float(np.median(np.abs(within)))
    noise = max(noise, float(np.median(day_noise / np.sqrt(known.sum(axis=1)[kept]))))
    spread = float(np.sqrt(np.sum((centres - centres.mean()) ** 2)))
    stderr = max(noise, 1e-3) / spread
    if abs(slope) < T_MIN * stderr:
        return None
    return Trend(slope, stderr)
