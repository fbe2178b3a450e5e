"""Budgets with days without usage: a key used now and then, a batch job every few days.

In logs a day without usage is a fall of a dozen units from a busy day's level, so the
log-scale model read each one as a crash and the next busy day as a spike: such budgets were
projected at several times, or at a fraction of, what they then used. So a day is two
things here: whether there is usage, and how much when there is. How much is the ETS of the
other budgets, fitted on the days with usage only (trend detection needs whole weeks and is
left out); whether is drawn per path and day from its weekday's recent share of days with
usage. Either engine: statsmodels' ETS has no days left out, so these budgets get the fast one.
"""

from __future__ import annotations

import numpy as np

from streams.forecast.shifts import LevelShift, align_to_last_level, deseasonalise, detect_shift
from streams.forecast.statespace import fast_paths
from streams.forecast.tiers import (
    COLD_START_DRIFT,
    EPS,
    PRIOR_DAY_SIGMA,
    TierPaths,
    simulate_level_profile,
)

NO_USAGE = 1.0
"""A day below one token had no usage."""
RECENT_WEEKS = 4
PRIOR_WEIGHT = 2.0
"""The weekday shares over the whole history are scaled by how busy the last four weeks
were against them (with two days' weight of 'as usual'): a budget used less and less
is projected so."""
MODEL_DAYS = 14
"""Days with usage before their amounts get the ETS; fewer are resampled as they were."""
SAMPLED = "intermittent_sampled"
QUIET_CHANCE = 0.01
QUIET_WEIGHT = 0.5
"""A run of idle days up to today that both the weekday shares and the overall share give
less than a one in a hundred chance means the budget went quiet (the overall share too, as
weekday shares of a short history are sure of too little). From then on its share is the
long-run one shrunk by the run's length (half a day's weight against each idle day), so a
retired feature is projected about flat, and the longer the quiet lasts the flatter."""


def has_idle_days(values: np.ndarray) -> bool:
    return bool(np.any(values < NO_USAGE))


def usage_share(values: np.ndarray, weekdays: np.ndarray) -> np.ndarray:
    """Per weekday (Monday = 0), the chance that a day ahead has usage."""
    used = (values >= NO_USAGE).astype(float)
    overall = (used.sum() + 0.5) / (len(used) + 1.0)
    long_run = _weekday_shares(used, weekdays, overall)
    recent = slice(max(0, len(values) - 7 * RECENT_WEEKS), len(values))
    activity = (used[recent].sum() + PRIOR_WEIGHT) / (
        long_run[weekdays[recent]].sum() + PRIOR_WEIGHT
    )
    share: np.ndarray = np.clip(long_run * activity, 0.0, 1.0)
    idle = len(used) - (int(np.flatnonzero(used)[-1]) + 1 if used.any() else 0)
    by_weekday = float(np.prod(1.0 - long_run[weekdays[len(used) - idle :]]))
    if idle and max(by_weekday, (1.0 - overall) ** idle) < QUIET_CHANCE:
        share = QUIET_WEIGHT * long_run / (idle + QUIET_WEIGHT)
    return share


def _weekday_shares(used: np.ndarray, weekdays: np.ndarray, overall: float) -> np.ndarray:
    """Each weekday's share of days with usage, shrunk towards the overall share as far as
    the weekdays differ no more than chance would make them (empirical Bayes): two idle
    Tuesdays of a budget idle one day in three say little; thirteen idle Sundays of an
    office team say the Sunday is off."""
    seen = np.bincount(weekdays, minlength=7).astype(float)
    present = seen > 0
    raw = np.bincount(weekdays, weights=used, minlength=7) / np.maximum(seen, 1.0)
    chance = overall * (1.0 - overall) / np.maximum(seen, 1.0)
    between = max(float(np.var(raw[present])) - float(np.mean(chance[present])), 1e-4)
    weight = np.where(present, between / (between + chance), 0.0)
    shares: np.ndarray = overall + weight * (raw - overall)
    return shares


def draw_usage(
    share: np.ndarray, ahead_weekdays: np.ndarray, n_paths: int, rng: np.random.Generator
) -> np.ndarray:
    """(paths, days): 1 where a path's day has usage, 0 where it has none."""
    drawn: np.ndarray = rng.random((n_paths, len(ahead_weekdays))) < share[ahead_weekdays]
    return drawn.astype(float)


def intermittent_paths(
    values: np.ndarray,
    weekdays: np.ndarray,
    ahead_weekdays: np.ndarray,
    n_paths: int,
    rng: np.random.Generator,
) -> TierPaths:
    """Paths of (usage or not) * (how much): ETS on the days with usage from two weeks of
    them on; before that, their own amounts resampled around a level each path draws."""
    used = values >= NO_USAGE
    share = usage_share(values, weekdays)
    if used.sum() < MODEL_DAYS:
        return TierPaths(_sampled(values, weekdays, share, ahead_weekdays, n_paths, rng), SAMPLED)
    usage = draw_usage(share, ahead_weekdays, n_paths, rng)
    logs = np.log(values + EPS)
    days = np.flatnonzero(used)
    found = detect_shift(deseasonalise(logs[days], weekdays[days], None))
    shift = None if found is None else LevelShift(int(days[found.index]), found.delta)
    logs = align_to_last_level(logs, shift)
    log_paths, _ = fast_paths(logs, weekdays, ahead_weekdays, n_paths, rng, used)
    amounts = np.maximum(np.exp(np.minimum(log_paths, 60.0)) - EPS, 0.0)
    method = "ets_fast+intermittent" + ("+shift" if shift else "")
    return TierPaths(amounts * usage, method, shift.index if shift else None)


def _sampled(
    values: np.ndarray,
    weekdays: np.ndarray,
    share: np.ndarray,
    ahead_weekdays: np.ndarray,
    n_paths: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Few days with usage: each path draws its level (the mean amount, as unsure as a mean
    of so few is) and each weekday's share of days with usage, then resamples the amounts
    seen."""
    amounts = values[values >= NO_USAGE]
    if not len(amounts):
        return np.zeros((n_paths, len(ahead_weekdays)))
    level = float(amounts.mean())
    spread = float(np.std(np.log(amounts + EPS), ddof=1)) if len(amounts) > 1 else 0.0
    sigma_day = max(spread, PRIOR_DAY_SIGMA)
    paths = simulate_level_profile(
        level,
        np.ones(7),
        ahead_weekdays,
        sigma_day,
        sigma_day / np.sqrt(len(amounts)),
        n_paths,
        rng,
        COLD_START_DRIFT,
        amounts / level,
    )
    # How often the budget is used is as unsure as the days counted say: one draw per path
    # scales every weekday's share (independent draws per weekday would average out)
    idle = len(values) - len(amounts)
    often = rng.beta(len(amounts) + 0.5, idle + 0.5, n_paths) * 7 / max(float(share.sum()), 1e-9)
    chance = np.clip(share[ahead_weekdays][None, :] * often[:, None], 0.0, 1.0)
    result: np.ndarray = paths * (rng.random(paths.shape) < chance)
    return result
