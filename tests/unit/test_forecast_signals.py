"""Daily usage folded from charges, and the signals the forecast agent publishes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from schemas.budgets import BudgetSpec, Limits, Period
from schemas.signals import ForecastUpdated, ProjectedOverrun, ThresholdCrossed
from streams.budgets import Budget
from streams.forecast.signals import (
    crossed_thresholds,
    forecast_budget,
    forecast_job,
    threshold_fields,
)
from streams.forecast.usage_days import UsageDays, add_lines, announce
from streams.ledger import ChargeLine
from streams.periods import to_ms

ZONE = "America/New_York"
TZ = ZoneInfo(ZONE)


def _budget(limit: int, kind: str = "month") -> Budget:
    spec = BudgetSpec(
        name="support copilot",
        limits=Limits(total_tokens=limit),
        period=Period(kind=kind, timezone=ZONE, window_days=7 if kind == "rolling" else None),
    )
    return Budget("support-copilot", "acme", 1, spec)


def _daily_usage(first: date, days: int, per_day: int) -> UsageDays:
    """`per_day` tokens each local day (two charge lines at local noon and evening)."""
    state = UsageDays("support-copilot")
    lines = []
    for i in range(days):
        day = first + timedelta(days=i)
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=TZ)
        lines.append(ChargeLine((2 * i, 0), to_ms(noon), per_day // 4, per_day // 4))
        late = noon + timedelta(hours=11, minutes=30)  # 23:30 local: still the same local day
        lines.append(ChargeLine((2 * i + 1, 0), to_ms(late), per_day // 4, per_day // 4))
    return add_lines(state, ZONE, 0, lines)


def test_lines_land_on_local_days_and_redelivery_is_skipped() -> None:
    state = _daily_usage(date(2026, 11, 1), 3, 1000)
    assert state.days == {
        "2026-11-01": (500, 500),
        "2026-11-02": (500, 500),
        "2026-11-03": (500, 500),
    }
    redelivered = add_lines(
        state, ZONE, 0, [ChargeLine((5, 0), to_ms(datetime(2026, 11, 3, 12, tzinfo=TZ)), 9, 9)]
    )
    assert redelivered == state
    other_partition = add_lines(
        state, ZONE, 1, [ChargeLine((0, 0), to_ms(datetime(2026, 11, 3, 12, tzinfo=TZ)), 9, 9)]
    )
    assert other_partition.days["2026-11-03"] == (509, 509)
    assert UsageDays.from_dict(other_partition.to_dict()) == other_partition


def test_series_is_zero_filled_and_consumed_sums_a_range() -> None:
    state = _daily_usage(date(2026, 11, 1), 2, 1000)
    series = state.series("input", date(2026, 11, 4))
    assert series.values == (500.0, 500.0, 0.0, 0.0)
    assert state.consumed("total", date(2026, 11, 2), date(2026, 11, 30)) == 1000


def test_forecast_budget_projects_the_period_and_announces_an_overrun_once() -> None:
    state = _daily_usage(date(2026, 10, 1), 45, 10_000)  # Oct 1 - Nov 14
    as_of = datetime(2026, 11, 15, 0, 0, tzinfo=TZ)
    result = forecast_budget(_budget(250_000), state, as_of)
    (projection,) = result.updated.projections
    assert result.updated.period_key == "2026-11"
    assert result.updated.period_end == datetime(2026, 12, 1, tzinfo=TZ)
    assert projection.p50 == pytest.approx(300_000, rel=0.02)
    assert result.overrun is not None
    assert result.overrun.consumed == 140_000
    assert result.overrun.recommended_action.startswith("projected 20% over")
    again = forecast_budget(_budget(250_000), announce(state, "2026-11"), as_of)
    assert again.overrun is None
    assert forecast_budget(_budget(400_000), state, as_of).overrun is None


def test_an_overrun_is_judged_against_the_effective_limit() -> None:
    """A child that drew 100k from its parent's pool has 350k this period, not its spec's 250k."""
    state = _daily_usage(date(2026, 10, 1), 45, 10_000)
    as_of = datetime(2026, 11, 15, 0, 0, tzinfo=TZ)
    drawn = forecast_budget(_budget(250_000), state, as_of, limits={"total": 350_000})
    assert drawn.overrun is None
    assert drawn.advice["total"].recommended_action.startswith("on track")
    lent = forecast_budget(_budget(400_000), state, as_of, limits={"total": 280_000})
    assert lent.overrun is not None and lent.overrun.limit == 280_000
    job = {
        "budget": _budget(250_000).to_dict(),
        "usage": state.to_dict(),
        "as_of": as_of.isoformat(),
        "limits": {"total": 350_000},
    }
    assert forecast_job(job)["overrun"] is None


def test_rolling_budget_projects_to_the_next_reset() -> None:
    state = _daily_usage(date(2026, 10, 1), 45, 10_000)
    as_of = datetime(2026, 11, 15, 12, 0, tzinfo=TZ)
    result = forecast_budget(_budget(1_000_000, "rolling"), state, as_of)
    (projection,) = result.updated.projections
    # Six days of the window are known (Nov 9-14, 60k); at noon, half of today is to come.
    assert projection.p50 == pytest.approx(65_000, rel=0.02)


def test_threshold_events_carry_the_projection_trend_and_action() -> None:
    state = _daily_usage(date(2026, 10, 1), 45, 10_000)
    as_of = datetime(2026, 11, 15, 0, 0, tzinfo=TZ)
    forecast = forecast_budget(_budget(250_000), state, as_of).updated
    fields = threshold_fields(forecast, "2026-11", "total", 250_000, state, as_of.date())
    crossing = ThresholdCrossed(
        tenant="acme",
        budget_id="support-copilot",
        period_key="2026-11",
        period_start=datetime(2026, 11, 1, tzinfo=TZ),
        period_end=datetime(2026, 12, 1, tzinfo=TZ),
        metric="total",
        threshold=50,
        consumed=140_000,
        limit=250_000,
        effective_limit=250_000,
        crossed_at=as_of,
        **fields,
    )
    assert crossing.projection is not None
    assert crossing.projection.p50 == forecast.projections[0].p50
    assert crossing.trend_vs_prev_7d == pytest.approx(0.0)
    assert crossing.recommended_action.startswith("projected 20% over")
    assert threshold_fields(forecast, "2026-10", "total", 250_000) == {}
    assert threshold_fields(None, "2026-11", "total", 250_000) == {}


def test_a_charge_that_crosses_a_threshold_is_recognised() -> None:
    budget = _budget(300_000)  # thresholds 75, 90, 100
    before = _daily_usage(date(2026, 11, 1), 20, 10_000)  # 200k: 66%
    noon = datetime(2026, 11, 21, 12, tzinfo=TZ)
    after = add_lines(before, ZONE, 0, [ChargeLine((100, 0), to_ms(noon), 20_000, 20_000)])
    assert crossed_thresholds(budget, before, after, noon) == [75]
    assert crossed_thresholds(budget, after, after, noon) == []


def test_forecast_job_runs_on_plain_data() -> None:
    state = _daily_usage(date(2026, 10, 1), 45, 10_000)
    job = {
        "budget": _budget(250_000).to_dict(),
        "usage": orjson.loads(orjson.dumps(state.to_dict())),
        "as_of": "2026-11-15T05:00:00+00:00",
        "pooled": {"total": [1.0] * 7},
    }
    out = forecast_job(job)
    updated = ForecastUpdated.parse(out["updated"])
    assert updated.projections[0].p50 == pytest.approx(300_000, rel=0.02)
    assert ProjectedOverrun.parse(out["overrun"]).period_key == "2026-11"


def test_an_office_budget_that_worked_one_saturday_is_not_projected_over() -> None:
    """Idle weekends and one worked Saturday: the log-scale model read that Saturday as a
    spike of nine log units, and its 80% band reached fifty times the expected total."""
    state = UsageDays("support-copilot")
    first = date(2026, 10, 1)
    lines = []
    for i in range(45):  # Oct 1 - Nov 14
        day = first + timedelta(days=i)
        if day.weekday() < 5 or day == date(2026, 10, 17):
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=TZ)
            lines.append(ChargeLine((i, 0), to_ms(noon), 5_000, 5_000))
    state = add_lines(state, ZONE, 0, lines)
    as_of = datetime(2026, 11, 15, 0, 0, tzinfo=TZ)
    workdays_left = sum(1 for d in range(15, 31) if date(2026, 11, d).weekday() < 5)
    expected = 10_000 * (10 + workdays_left)  # Nov 1-14 held ten workdays
    result = forecast_budget(_budget(int(expected * 1.25)), state, as_of)
    (projection,) = result.updated.projections
    assert projection.p50 == pytest.approx(expected, rel=0.1)
    assert projection.band95.high < 1.5 * expected
    assert result.overrun is None
