"""Level shifts: a new pipeline shipped mid-month doubles a budget's burn overnight.

A smoothing model with a small level gain needs weeks to follow such a step, so the step is
found first and the history before it is moved to the new level. The weekday rhythm is kept;
only the level changes. The step is looked for anywhere in the history the model sees, not
only in its last weeks: a level gain of 0.05 still carries a third of a step three weeks
later, which made budgets that shifted a month ago worse projected than by linear
extrapolation. A single spike is not a shift: the days after the break must sit on the new
side (all of them while there are few, three in four after that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_AFTER = 2
"""Days after a break before it counts: the projection follows a step within two days."""
MIN_BEFORE = 5
BEFORE_DAYS = 28
"""The level before a break is measured on at most four weeks: older days may sit on an
older level."""
ROBUST_AFTER = 8
"""From this many days after a break, the step is a difference of medians and one day in
four may sit on the old side (a spike, or a noisy day). Before that, means and every day:
a break placed a day too early then loses, as it should."""
LOCAL_DAYS = 7
ABRUPT_SHARE = 0.5
"""A step is abrupt: the week either side of the break must differ by at least half of the
step. Growth looks like a step between long medians, but not between neighbouring weeks."""
SAME_SIDE_SHARE = 0.75
MIN_STEP = 0.25
"""Smallest step in log space (about ±25 to 30 percent) that counts as a shift."""
T_CRITICAL = 4.0
TREND_WINDOW = 21
T_BEYOND_TREND = 4.0
"""A step must also stand this many standard errors clear of a line through the 21 days
either side of it (`_beyond_trend`; days with usage, for a budget with idle days)."""
HUBER = 2.0
MEDIAN_EFFICIENCY = 1.25
"""A median's standard error is about 1.25 times a mean's, for normal noise."""


@dataclass(frozen=True)
class LevelShift:
    """History before `index` sits `delta` (log scale) below the level from `index` on."""

    index: int
    delta: float


def deseasonalise(
    log_values: np.ndarray, weekdays: np.ndarray, seasonal: np.ndarray | None
) -> np.ndarray:
    """Log values minus a weekday effect (given, or the series' own: `weekday_effect`)."""
    if seasonal is None:
        seasonal = weekday_effect(log_values, weekdays)
    result: np.ndarray = log_values - seasonal[weekdays]
    return result


def weekday_effect(log_values: np.ndarray, weekdays: np.ndarray) -> np.ndarray:
    """Each weekday's median distance from the local level (the median of the week around
    the day), centred; zero for a weekday seen fewer than twice.

    Distances from the local level, not plain weekday medians: a level step would leak into
    medians of weekdays seen unevenly on either side of it (a budget with idle days), and
    the deseasonalised series would then zigzag and hide the step in its own noise."""
    half = 3
    padded = np.pad(log_values, half, mode="edge")  # the first and last days repeated
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    distance = log_values - np.median(windows, axis=1)
    by_weekday = np.full((7, len(log_values)), np.nan)
    by_weekday[weekdays, np.arange(len(log_values))] = distance
    present = np.bincount(weekdays, minlength=7) >= 2
    effect = np.where(present, _row_medians(by_weekday), 0.0)
    if present.any():
        effect = np.where(present, effect - effect[present].mean(), 0.0)
    return effect


def _noise(z: np.ndarray) -> float:
    """Robust day-to-day noise: MAD of first differences, scaled to a standard deviation."""
    if len(z) < 3:
        return 0.1
    diffs = np.diff(z)
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return max(float(1.4826 * mad / np.sqrt(2.0)), 0.02)


def detect_shift(z: np.ndarray) -> LevelShift | None:
    """The most convincing step in a deseasonalised log series, if any.

    Every break that leaves MIN_BEFORE days before it and MIN_AFTER after is scored at once,
    one row per break, by its step over the noise of the whole series (first differences,
    so a step counts once). Where rows tie, the earliest break wins.
    """
    n = len(z)
    if n < MIN_BEFORE + MIN_AFTER:
        return None
    breaks = np.arange(MIN_BEFORE, n - MIN_AFTER + 1)
    tails = _window(z, breaks, n)
    tail_days = n - breaks
    robust = tail_days >= ROBUST_AFTER
    # With few days after a break, a mean: a break placed too late leaves shifted days in
    # `before`, and only the mean is pulled by them, so the true break scores highest.
    after = np.where(robust, _row_medians(tails), np.nanmean(tails, axis=1))
    before = _row_medians(_window(z, breaks - BEFORE_DAYS, breaks))
    delta = after - before
    midpoint = (before + delta / 2)[:, None]
    on_new_side = np.where(delta > 0, (tails > midpoint).sum(1), (tails < midpoint).sum(1))
    needed = np.where(robust, SAME_SIDE_SHARE, 1.0)
    local = np.nanmean(_window(z, breaks, breaks + LOCAL_DAYS), axis=1) - _row_medians(
        _window(z, breaks - LOCAL_DAYS, breaks)
    )
    before_days = np.minimum(breaks, BEFORE_DAYS)
    sigma = _noise(z)
    scale = MEDIAN_EFFICIENCY * sigma * np.sqrt(1 / tail_days + 1 / before_days)
    t = np.abs(delta) / scale
    convincing = (
        (np.abs(delta) >= MIN_STEP)
        & (on_new_side >= needed * tail_days)
        & (local * delta > 0)
        & (np.abs(local) >= ABRUPT_SHARE * np.abs(delta))
        & (t >= T_CRITICAL)
    )
    ranked = np.argsort(-np.where(convincing, t, -np.inf), kind="stable")
    for best in ranked[: int(convincing.sum())]:
        if not _beyond_trend(z, int(breaks[best]), float(delta[best]), sigma):
            continue
        index = _sharpest_break(z, int(breaks[best]), float(delta[best]))
        if not convincing[breaks == index][0]:
            index = int(breaks[best])
        return LevelShift(index, float(delta[breaks == index][0]))
    return None


def _beyond_trend(z: np.ndarray, index: int, delta: float, sigma: float) -> bool:
    """Whether the step stands out from a straight line through the weeks around it.

    Steady growth differs between long medians, and with noise even between neighbouring
    weeks, like a step; a line with a step must fit the days around the break clearly
    better than the line alone. Fitted with Huber weights, so a spike is not a step.
    """
    low, high = max(0, index - TREND_WINDOW), min(len(z), index + TREND_WINDOW)
    days = np.arange(low, high) - index
    design = np.column_stack([np.ones(len(days)), days, days >= 0])
    values = z[low:high]
    weights = np.ones(len(days))
    for _ in range(3):
        root = np.sqrt(weights)
        coef = np.linalg.lstsq(design * root[:, None], values * root, rcond=None)[0]
        excess = np.abs(values - design @ coef) / (HUBER * sigma)
        weights = np.where(excess <= 1, 1.0, 1.0 / np.maximum(excess, 1e-12))
    covariance = np.linalg.pinv(design.T @ (design * weights[:, None]))
    t = float(coef[2]) / (sigma * np.sqrt(max(float(covariance[2, 2]), 1e-12)))
    return bool(t * np.sign(delta) >= T_BEYOND_TREND)


def _sharpest_break(z: np.ndarray, found: int, delta: float) -> int:
    """Where, near `found`, the week after differs most from the week before.

    Medians let a break placed a day or two early keep its step while its t grows with the
    longer tail, so the most convincing break is not always where the step is.
    """
    low = max(MIN_BEFORE, found - LOCAL_DAYS)
    high = min(len(z) - MIN_AFTER, found + LOCAL_DAYS)
    candidates = np.arange(low, high + 1)
    contrast = [
        np.sign(delta) * (np.mean(z[b : b + LOCAL_DAYS]) - np.mean(z[max(0, b - LOCAL_DAYS) : b]))
        for b in candidates
    ]
    return int(candidates[int(np.argmax(contrast))])


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """The median of each row's finite values (NaN for a row with none); np.nanmedian on
    small rows takes a masked-array path some ten times slower."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    counts = np.isfinite(rows).sum(axis=1)
    low = np.maximum(counts - 1, 0) // 2
    high = np.maximum(counts, 1) // 2 - (counts == 0)
    pick = np.take_along_axis
    middle = (pick(ordered, low[:, None], 1) + pick(ordered, np.maximum(high, 0)[:, None], 1)) / 2
    result: np.ndarray = np.where(counts > 0, middle[:, 0], np.nan)
    return result


def _window(z: np.ndarray, lows: np.ndarray, highs: int | np.ndarray) -> np.ndarray:
    """One row per break: z on [low, high) of that row, NaN elsewhere."""
    days = np.arange(len(z))[None, :]
    inside = (days >= lows[:, None]) & (days < np.asarray(highs).reshape(-1, 1))
    rows: np.ndarray = np.where(inside, z[None, :], np.nan)
    return rows


def align_to_last_level(log_values: np.ndarray, shift: LevelShift | None) -> np.ndarray:
    """History moved onto the level after the shift, so every model starts from it."""
    if shift is None:
        return log_values
    adjusted = log_values.copy()
    adjusted[: shift.index] += shift.delta
    return adjusted
