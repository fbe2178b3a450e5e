"""Level shifts: a new pipeline shipped mid-month doubles a budget's burn overnight.

A smoothing model with a small level gain needs weeks to follow such a step, so the step is
found first and the history before it is moved to the new level. The weekday rhythm is kept;
only the level changes. A single spike is not a shift: every day after the break must sit on
the new side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_AFTER = 2
"""Days after a break before it counts: the projection follows a step within two days."""
MAX_AFTER = 21
MIN_BEFORE = 5
MIN_STEP = 0.25
"""Smallest step in log space (about ±25 to 30 percent) that counts as a shift."""
T_CRITICAL = 4.0


@dataclass(frozen=True)
class LevelShift:
    """History before `index` sits `delta` (log scale) below the level from `index` on."""

    index: int
    delta: float


def deseasonalise(
    log_values: np.ndarray, weekdays: np.ndarray, seasonal: np.ndarray | None
) -> np.ndarray:
    """Log values minus a weekday effect (given, or the series' own weekday medians)."""
    if seasonal is None:
        seasonal = np.zeros(7)
        for wd in range(7):
            mask = weekdays == wd
            if mask.sum() >= 2:
                seasonal[wd] = np.median(log_values[mask])
        present = seasonal != 0
        if present.any():
            seasonal = np.where(present, seasonal - seasonal[present].mean(), 0.0)
    result: np.ndarray = log_values - seasonal[weekdays]
    return result


def _noise(z: np.ndarray) -> float:
    """Robust day-to-day noise: MAD of first differences, scaled to a standard deviation."""
    if len(z) < 3:
        return 0.1
    diffs = np.diff(z)
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    return max(float(1.4826 * mad / np.sqrt(2.0)), 0.02)


def detect_shift(z: np.ndarray) -> LevelShift | None:
    """The most convincing recent step in a deseasonalised log series, if any."""
    n = len(z)
    best: tuple[float, LevelShift] | None = None
    for after in range(MIN_AFTER, min(MAX_AFTER, n - MIN_BEFORE) + 1):
        index = n - after
        before = z[max(0, index - 21) : index]
        tail = z[index:]
        sigma = _noise(before)
        # Means, not medians, for the step: a break placed too late leaves shifted days in
        # `before`, and only the mean is pulled by them, so the true break scores highest.
        delta = float(np.mean(tail) - np.mean(before))
        if abs(delta) < MIN_STEP:
            continue
        midpoint = float(np.median(before)) + delta / 2
        same_side = (tail > midpoint) if delta > 0 else (tail < midpoint)
        if not same_side.all():
            continue
        t = abs(delta) / (sigma * np.sqrt(1 / len(tail) + 1 / len(before)))
        if t >= T_CRITICAL and (best is None or t > best[0]):
            best = (t, LevelShift(index, delta))
    return None if best is None else best[1]


def align_to_last_level(log_values: np.ndarray, shift: LevelShift | None) -> np.ndarray:
    """History moved onto the level after the shift, so every model starts from it."""
    if shift is None:
        return log_values
    adjusted = log_values.copy()
    adjusted[: shift.index] += shift.delta
    return adjusted
