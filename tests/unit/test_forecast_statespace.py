"""The numpy ETS engine: its path shortcut equals running the model's recursions forward."""

from __future__ import annotations

import numpy as np

from streams.forecast.statespace import fast_paths, fit_ets, innovation_matrix


def _run_forward(
    level: float,
    seasonal: np.ndarray,
    weekdays: np.ndarray,
    errors: np.ndarray,
    alpha: float,
    gamma: float,
) -> np.ndarray:
    seasonal = seasonal.copy()
    out = []
    for wd, e in zip(weekdays, errors, strict=True):
        out.append(level + seasonal[wd] + e)
        level += alpha * e
        seasonal[wd] += gamma * e
    return np.array(out)


def test_paths_by_matrix_equal_the_recursions() -> None:
    rng = np.random.default_rng(7)
    seasonal = rng.normal(0, 0.3, 7)
    weekdays = (np.arange(24) + 3) % 7
    errors = rng.normal(0, 0.1, 24)
    alpha, gamma = 0.3, 0.1
    by_matrix = 5.0 + seasonal[weekdays] + errors @ innovation_matrix(alpha, gamma, 24)
    forward = _run_forward(5.0, seasonal, weekdays, errors, alpha, gamma)
    assert np.allclose(by_matrix, forward)


def test_fit_finds_the_weekday_effect_and_the_level() -> None:
    rng = np.random.default_rng(11)
    effect = np.array([0.2, 0.2, 0.2, 0.2, 0.2, -0.5, -0.5])
    weekdays = np.arange(63) % 7
    y = 10.0 + effect[weekdays] + rng.normal(0, 0.05, 63)
    fit = fit_ets(y, weekdays)
    assert abs(fit.level + fit.seasonal.mean() - 10.0 - effect.mean()) < 0.05
    assert np.allclose(fit.seasonal - fit.seasonal.mean(), effect - effect.mean(), atol=0.06)
    assert len(fit.residuals) == 63 - 7


def test_a_spike_does_not_lift_the_level() -> None:
    weekdays = np.arange(42) % 7
    y = np.full(42, 10.0)
    y[-2] += 1.5  # one day at 4.5 times the usual
    fit = fit_ets(y + np.random.default_rng(2).normal(0, 0.03, 42), weekdays)
    assert abs(fit.level + fit.seasonal.mean() - 10.0) < 0.1


def _spiky_days(rng: np.random.Generator, count: int) -> np.ndarray:
    """Log usage: steady, 10 percent noise, one day in twenty at four times the usual."""
    days = 10.0 + rng.normal(0, 0.1, count)
    days[rng.random(count) < 0.05] += np.log(4.0)
    return days


def test_the_median_of_the_paths_is_a_median_of_what_comes() -> None:
    # Spikes make the mean one-step error positive; taking that mean out of every drawn day
    # put the median of the period total low: the future came in above it 62% of the time.
    above = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        paths, _ = fast_paths(
            _spiky_days(rng, 70),
            np.arange(70) % 7,
            np.arange(70, 87) % 7,
            1000,
            np.random.default_rng(0),
        )
        p50 = np.median(np.exp(paths).sum(axis=1))
        futures = np.exp(np.array([_spiky_days(rng, 17) for _ in range(400)])).sum(axis=1)
        above.append(float(np.mean(futures > p50)))
    assert 0.45 <= np.mean(above) <= 0.57
