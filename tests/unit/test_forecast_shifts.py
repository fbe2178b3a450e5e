"""Level shifts are found within a few days; a single spike is not a shift."""

from __future__ import annotations

import numpy as np

from streams.forecast.shifts import align_to_last_level, detect_shift


def _noise(n: int, seed: int = 3, sigma: float = 0.05) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, sigma, n)


def test_a_step_up_is_found_after_three_days() -> None:
    z = _noise(40)
    z[-3:] += np.log(2.5)
    shift = detect_shift(z)
    assert shift is not None
    assert shift.index == 37
    assert abs(shift.delta - np.log(2.5)) < 0.1


def test_a_step_down_is_found_and_history_is_moved_onto_it() -> None:
    z = _noise(30)
    z[-5:] -= 0.7
    shift = detect_shift(z)
    assert shift is not None and shift.index == 25
    aligned = align_to_last_level(z, shift)
    assert abs(aligned[:25].mean() - aligned[25:].mean()) < 0.1


def test_a_single_spike_or_plain_noise_is_not_a_shift() -> None:
    z = _noise(40, sigma=0.15)
    assert detect_shift(z) is None
    z[-2] += 2.0
    assert detect_shift(z) is None
    assert align_to_last_level(z, None) is z


def test_a_step_five_weeks_back_is_found_through_spikes_on_the_old_side() -> None:
    z = _noise(70, sigma=0.1)
    z[35:] += 0.6
    z[[44, 58]] -= 1.0  # two quiet days after the step
    shift = detect_shift(z)
    assert shift is not None
    assert abs(shift.index - 35) <= 1
    assert abs(shift.delta - 0.6) < 0.1


def test_steady_growth_is_not_a_step() -> None:
    z = _noise(90) + np.linspace(0.0, 0.9, 90)  # 30 percent a month
    assert detect_shift(z) is None


def test_noisy_growth_is_not_a_step() -> None:
    # 1% a day under 15% noise: long medians and neighbouring weeks both differ like a step
    for seed in range(5):
        z = _noise(90, seed=seed, sigma=0.15) + 0.01 * np.arange(90)
        assert detect_shift(z) is None
