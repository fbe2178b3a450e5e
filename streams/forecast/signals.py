"""From a budget and its days to the signals the forecast agent publishes.

`forecast_budget` is everything the agent does between reading its table and sending:
project every limited metric to the end of the period `as_of` falls in, build the
`ForecastUpdated`, and, when a p50 first exceeds its limit in this period, the one
`ProjectedOverrun` of the period. `threshold_fields` is what a threshold crossing adds to its
payload from the latest forecast of the same period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from schemas.budgets import Metric
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated, ProjectedOverrun
from streams.budgets import Budget
from streams.forecast.advice import Advice, advise, projects_overrun
from streams.forecast.daily import DailySeries, local_date
from streams.forecast.profile import WeekdayProfile
from streams.forecast.project import N_PATHS, Engine, project_period
from streams.forecast.usage_days import UsageDays
from streams.periods import period_of, rolling_keys
from streams.thresholds import new_crossings


@dataclass(frozen=True)
class BudgetForecast:
    updated: ForecastUpdated
    overrun: ProjectedOverrun | None
    advice: dict[Metric, Advice]


def _consumed_days(budget: Budget, as_of: datetime, today: date) -> tuple[date, date]:
    period = budget.spec.period
    keys = rolling_keys(period, as_of)
    if period.kind == "rolling":
        return date.fromisoformat(keys[0]), today
    window = period_of(period, as_of)
    return local_date(window.start, period.timezone), today


def forecast_budget(
    budget: Budget,
    usage: UsageDays,
    as_of: datetime,
    pooled: Mapping[Metric, WeekdayProfile | None] | None = None,
    engine: Engine = "fast",
    n_paths: int = N_PATHS,
    limits: Mapping[Metric, int] | None = None,
) -> BudgetForecast:
    """The forecast signals of one budget at `as_of` (at most one overrun per period).

    `limits` are the budget's effective limits in this period (its spec's plus what the
    allocation events gave or took, `streams.allocation.effective_limits`): a child that drew
    from its parent's pool overruns only beyond what it drew. Default: the spec's limits.
    """
    limits = dict(budget.limits if limits is None else limits)
    period = budget.spec.period
    zone = period.timezone
    window = period_of(period, as_of)
    today = local_date(as_of, zone)
    first, last = _consumed_days(budget, as_of, today)
    metrics = list(limits)
    histories = {m: usage.series(m, today - timedelta(days=1)) for m in metrics}
    consumed = {m: float(usage.consumed(m, first, last)) for m in metrics}
    today_so_far = {m: float(usage.consumed(m, today, today)) for m in metrics}
    projections = project_period(
        window.start,
        window.end,
        zone,
        as_of,
        histories,
        consumed,
        pooled,
        engine,
        n_paths,
        today_so_far=today_so_far,
    )
    advice = {p.metric: advise(histories[p.metric], p, limits[p.metric]) for p in projections}
    days = max((len(h) for h in histories.values()), default=0)
    updated = ForecastUpdated(
        tenant=budget.tenant,
        budget_id=budget.budget_id,
        period_key=window.key,
        period_end=window.end,
        as_of=as_of,
        days_of_history=days,
        projections=projections,
    )
    overrun = None
    if window.key not in usage.announced:
        for p in projections:
            limit = limits[p.metric]
            if projects_overrun(p, limit):
                overrun = ProjectedOverrun(
                    tenant=budget.tenant,
                    budget_id=budget.budget_id,
                    period_key=window.key,
                    period_end=window.end,
                    consumed=int(consumed[p.metric]),
                    limit=limit,
                    projection=p,
                    detected_at=as_of,
                    recommended_action=advice[p.metric].recommended_action,
                )
                break
    return BudgetForecast(updated, overrun, advice)


def threshold_fields(
    forecast: ForecastUpdated | None,
    period_key: str,
    metric: Metric,
    limit: int,
    history: UsageDays | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Fields a `ThresholdCrossed` payload takes from the latest forecast of its period.

    Empty when there is no forecast of that period yet (a crossing never waits for a fit).
    """
    if forecast is None or forecast.period_key != period_key:
        return {}
    projection = next((p for p in forecast.projections if p.metric == metric), None)
    if projection is None:
        return {}
    day = today or forecast.as_of.date()
    # Without the days the trend is unknown; the action still follows the projection.
    empty = DailySeries(day, ())
    series = history.series(metric, day - timedelta(days=1)) if history is not None else empty
    found = advise(series, projection, limit)
    return {
        "projection": projection.model_dump(mode="json"),
        "trend_vs_prev_7d": found.trend_vs_prev_7d,
        "recommended_action": found.recommended_action,
    }


def crossed_thresholds(
    budget: Budget, before: UsageDays, after: UsageDays, at: datetime
) -> list[int]:
    """Thresholds a charge (days `before` -> `after`) crossed in the period `at` falls in.

    The forecast agent recomputes a budget right after such a crossing; the rule of what
    counts as crossed is the ledger's own (`streams.thresholds.new_crossings`).
    """
    today = local_date(at, budget.spec.period.timezone)
    first, last = _consumed_days(budget, at, today)

    def percent(days: UsageDays) -> float:
        return max(
            (100.0 * days.consumed(m, first, last) / limit for m, limit in budget.limits.items()),
            default=0.0,
        )

    already = [t for t in budget.thresholds if t <= percent(before)]
    return new_crossings(budget.thresholds, percent(after), already)


def forecast_job(job: dict[str, Any]) -> dict[str, Any]:
    """One budget's forecast from and to plain data, for a worker process of the agent.

    `job`: budget (`Budget.to_dict`), usage (`UsageDays.to_dict`), as_of (ISO 8601 with
    offset), pooled ({metric: 7 factors} or absent), limits ({metric: effective limit} or
    absent for the spec's), engine, n_paths. Returns the wire forms
    of the `ForecastUpdated` and of the `ProjectedOverrun` (or None).
    """
    pooled = {
        metric: WeekdayProfile(tuple(factors))
        for metric, factors in (job.get("pooled") or {}).items()
    }
    result = forecast_budget(
        Budget.from_dict(job["budget"]),
        UsageDays.from_dict(job["usage"]),
        datetime.fromisoformat(job["as_of"]),
        pooled or None,
        job.get("engine", "fast"),
        int(job.get("n_paths", N_PATHS)),
        {metric: int(limit) for metric, limit in job["limits"].items()}
        if job.get("limits")
        else None,
    )
    return {
        "updated": result.updated.to_wire(),
        "overrun": None if result.overrun is None else result.overrun.to_wire(),
    }


def forecast_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch of `forecast_job`s (one worker-process call); a failing budget is reported
    as {"budget_id", "error"} and does not stop the others."""
    outputs: list[dict[str, Any]] = []
    for job in jobs:
        try:
            outputs.append(forecast_job(job))
        except (AllotmentError, ValueError, KeyError, TypeError) as exc:
            outputs.append({"budget_id": job.get("budget", {}).get("budget_id"), "error": str(exc)})
    return outputs


def opts_in_to_overrun_degrade(budget: Budget) -> bool:
    degrade = budget.spec.degrade
    return degrade is not None and degrade.on_projected_overrun
