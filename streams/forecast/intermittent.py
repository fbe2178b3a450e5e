"""Budgets with days without usage: a key used now and then, a batch job every few days.

In logs a day without usage is a fall of a dozen units from a busy day's level, so the
log-scale models read each one as a crash and the next busy day as a spike: such budgets were
projected at several times, or at a fraction of, what they then used. So a day is two
things here: whether there is usage, and how much when there is. How much is the ETS of the
other budgets fitted on the days with usage only (`project._statespace`), or with fewer
than MODEL_DAYS of them their amounts resampled (`sampled_paths`); whether is drawn per path
and day from its weekday's share of days with usage (`usage_outlook`, `draw_usage`).
Days before a metric's first usage (in the 13 weeks the models read) are not idle days: the
budget had not begun.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streams.forecast.shifts import align_to_last_level, detect_shift
from streams.forecast.tiers import (
    COLD_START_DRIFT,
    EPS,
    PRIOR_DAY_SIGMA,
    blend_sigma,
    keep_today,
    noise_dof,
    simulate_level_profile,
)

NO_USAGE = 1.0
"""A day below one token had no usage."""
MODEL_DAYS = 14
"""Days with usage before their amounts get the ETS; fewer are resampled as they were."""
RECENT_WEEKS = 4
PRIOR_WEIGHT = 2.0
UNLIKELY_RUN = 0.002
"""The weekday shares over the whole history are scaled by how busy the last four weeks
were against them (with two days' weight of 'as usual'), leaving out runs of idle days the
shares give less than a one in five hundred chance (one in twenty over the days a run could
start on in four weeks: not bad luck): a budget used less and less is projected so, one back
from a holiday is not."""
QUIET_CHANCE = 0.01
QUIET_PER_DAY = 0.08
QUIET_PATHS = 0.85
"""Idle days up to today (and none today), which the weekday shares and the overall share
both give less than a one in a hundred chance, are a holiday or a stop (a retired feature).
For each such day 8 paths in 100 more, at most 85, stay quiet to the period's end, so the
bands hold both outcomes, and the p50 expects a stop after about a week. Usage today ends
it (`used_today`). Set on the bench's idle-day series (development seed) and on office
holidays: 5 a day left retired features projected as active for two weeks, 12 a day put
more keys that are idle for a few days at random into the quiet."""


@dataclass(frozen=True)
class UsageOutlook:
    """Per weekday (Monday = 0), the chance that a day ahead has usage, and the share of
    paths on which the budget stays quiet to the period's end."""

    share: np.ndarray
    quiet: float = 0.0


def is_used(values: np.ndarray) -> np.ndarray:
    used: np.ndarray = values >= NO_USAGE
    return used


def has_idle_days(values: np.ndarray) -> bool:
    return not bool(is_used(values).all())


def since_first_use(values: np.ndarray, weekdays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The history from the metric's first day with usage (all of it if it has none)."""
    used = np.flatnonzero(is_used(values))
    start = int(used[0]) if len(used) else 0
    return values[start:], weekdays[start:]


def usage_outlook(
    values: np.ndarray, weekdays: np.ndarray, used_today: bool = False
) -> UsageOutlook:
    used = is_used(values).astype(float)
    overall = (used.sum() + 0.5) / (len(used) + 1.0)
    long_run = _weekday_shares(used, weekdays, overall)
    idle = len(used) - (int(np.flatnonzero(used)[-1]) + 1 if used.any() else 0)
    # Activity leaves out runs of idle days the shares make unlikely (a holiday, a pause: not
    # a slowdown; the quiet paths deal with a stop) and counts the rest, which are how a
    # slowdown shows.
    recent = np.zeros(len(used), dtype=bool)
    recent[max(0, len(used) - 7 * RECENT_WEEKS) :] = True
    recent &= ~_in_unlikely_runs(used, weekdays, long_run)
    activity = (used[recent].sum() + PRIOR_WEIGHT) / (
        long_run[weekdays[recent]].sum() + PRIOR_WEIGHT
    )
    share = np.clip(long_run * activity, 0.0, 1.0)
    if not idle or used_today:
        return UsageOutlook(share)
    by_weekday = float(np.prod(1.0 - long_run[weekdays[len(used) - idle :]]))
    if max(by_weekday, (1.0 - overall) ** idle) >= QUIET_CHANCE:
        return UsageOutlook(share)
    return UsageOutlook(share, min(QUIET_PER_DAY * idle, QUIET_PATHS))


def _in_unlikely_runs(used: np.ndarray, weekdays: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Days in runs of idle days that `share` gives less than an UNLIKELY_RUN chance."""
    idle = np.concatenate([[False], used == 0, [False]])
    edges = np.flatnonzero(np.diff(idle.astype(int)))
    marked = np.zeros(len(used), dtype=bool)
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if float(np.prod(1.0 - share[weekdays[start:stop]])) < UNLIKELY_RUN:
            marked[start:stop] = True
    return marked


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
    outlook: UsageOutlook,
    ahead_weekdays: np.ndarray,
    n_paths: int,
    rng: np.random.Generator,
    often: np.ndarray | None = None,
    used_today: bool = False,
) -> np.ndarray:
    """(paths, days): 1 where a path's day has usage, 0 where it has none; today, if it has
    usage, is used on every path (`keep_today`). `often` scales each path's shares (how sure
    the usage rate is). Exactly round(quiet * n_paths) paths, chosen at random, stay quiet: a
    coin per path would move the band edges from run to run."""
    chance = np.broadcast_to(outlook.share[ahead_weekdays], (n_paths, len(ahead_weekdays)))
    if often is not None:
        chance = np.clip(chance * often[:, None], 0.0, 1.0)
    quiet = np.zeros(n_paths, dtype=bool)
    quiet[rng.permutation(n_paths)[: round(outlook.quiet * n_paths)]] = True
    drawn = (rng.random(chance.shape) < chance) & ~quiet[:, None]
    return keep_today(drawn.astype(float), used_today)


def sampled_paths(
    values: np.ndarray,
    weekdays: np.ndarray,
    ahead_weekdays: np.ndarray,
    n_paths: int,
    rng: np.random.Generator,
    used_today: bool = False,
) -> np.ndarray:
    """Few days with usage: their amounts (moved onto the last level if they shifted)
    resampled around a level each path draws, as unsure as a mean of so few is (their noise
    in logs shrunk towards the prior's, as in the short-history tiers, and drawn per path:
    a Student t level), times days with usage drawn at a rate each path draws from the days
    counted."""
    used = is_used(values)
    amounts = values[used]
    if not len(amounts):
        return np.zeros((n_paths, len(ahead_weekdays)))
    logs = np.log(amounts + EPS)
    logs = align_to_last_level(logs, detect_shift(logs))
    amounts = np.maximum(np.exp(logs) - EPS, 0.0)
    level = float(amounts.mean())
    count = len(amounts)
    variation = float(np.std(amounts, ddof=1)) / level if count > 1 else 0.0
    sigma = blend_sigma((logs - logs.mean()) * np.sqrt(count / max(count - 1, 1)))
    paths = simulate_level_profile(
        level,
        np.ones(7),
        ahead_weekdays,
        PRIOR_DAY_SIGMA,  # not drawn from: the day noise is the resampled amounts
        max(variation, sigma) / np.sqrt(count),
        n_paths,
        rng,
        COLD_START_DRIFT,
        amounts / level,
        noise_dof(count - 1),
    )
    idle = len(values) - len(amounts)
    rate = (len(amounts) + 0.5) / (len(values) + 1.0)
    often = rng.beta(len(amounts) + 0.5, idle + 0.5, n_paths) / rate
    outlook = usage_outlook(values, weekdays, used_today)
    result: np.ndarray = paths * draw_usage(
        outlook, ahead_weekdays, n_paths, rng, often, used_today
    )
    return result
