"""The forecast agent inside a real worker: forecasts on its timer, an overrun once, a
threshold crossing that carries the projection of its period, and an early demotion for a
budget that opts in to degrade on a projected overrun.

The worker runs with a 3-second forecast interval (ALLOTMENT_FORECAST_INTERVAL). Usage is
sent in two rounds: the first stays under 75% of the limit, so a forecast exists before the
second round crosses 75%; the crossing's payload must then carry that forecast.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from pipeline_harness import (
    WorkerProcess,
    Workers,
    budget_event,
    delete_prefixed_topics,
    policies,
    publish_allocation,
    publish_budgets,
    read_all,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

from schemas.allocation import OverflowDrawn
from schemas.budgets import Period
from schemas.signals import ForecastUpdated, ProjectedOverrun, ThresholdCrossed
from schemas.topics import FORECASTS
from streams.periods import period_of


async def _signals(bootstrap: str, prefix: str, budget_id: str) -> list[dict]:
    records = await read_all(bootstrap, FORECASTS.name(prefix))
    found = [orjson.loads(r.value) for r in records]
    return [s for s in found if s.get("budget_id") == budget_id]


async def test_agent_publishes_forecasts_an_overrun_once_and_enriches_crossings(
    kafka_bootstrap: str, topic_prefix: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLOTMENT_FORECAST_INTERVAL", "3")
    monkeypatch.setenv("ALLOTMENT_FORECAST_CROSSING_DELAY", "1")
    run = uuid.uuid4().hex[:8]
    tenant, budget_id = f"t{run}", f"t{run}/copilot"
    limit = 1_000_000
    spec = {
        "name": "copilot",
        "limits": {"total_tokens": limit},
        "degrade": {"target_model": "gpt-4o-mini", "on_projected_overrun": True},
    }
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, budget_id, spec)],
    )
    worker = WorkerProcess(
        topic_prefix,
        tmp_path / "store",
        tmp_path / "worker.log",
        kafka_bootstrap,
        ["--store", "memory"],
    ).start()
    now = datetime.now(UTC)
    try:
        # Round one: 40% of the limit, 40 and 45 minutes ago: a pace far above the limit.
        first = [
            usage(f"{run}-a{i}", tenant, now - timedelta(minutes=40 + 5 * i), 100_000, 100_000)
            for i in range(2)
        ]
        await send_usage(kafka_bootstrap, topic_prefix, first)

        async def forecast_seen() -> list[dict]:
            found = await _signals(kafka_bootstrap, topic_prefix, budget_id)
            return [s for s in found if s["type"] == "ForecastUpdated"]

        forecasts = await wait_for(forecast_seen, timeout=120, workers=[worker])
        updated = ForecastUpdated.parse(forecasts[0])
        (projection,) = updated.projections
        assert projection.metric == "total"
        assert projection.p50 >= 400_000
        assert projection.band95.low <= projection.band80.low <= projection.p50

        # Round two: to 80%, crossing 75%, with a burn rate far above the limit.
        second = [usage(f"{run}-b", tenant, datetime.now(UTC), 200_000, 200_000)]
        await send_usage(kafka_bootstrap, topic_prefix, second)

        async def crossing_seen() -> list[dict]:
            found = await thresholds(kafka_bootstrap, topic_prefix)
            return [c for c in found if c.get("budget_id") == budget_id]

        (crossing_wire,) = await wait_for(crossing_seen, timeout=120, workers=[worker])
        crossing = ThresholdCrossed.parse(crossing_wire)
        assert crossing.threshold == 75
        assert crossing.projection is not None
        assert crossing.projection.metric == "total"
        assert crossing.recommended_action.startswith(("projected", "on track"))

        async def overrun_seen() -> list[dict]:
            found = await _signals(kafka_bootstrap, topic_prefix, budget_id)
            return [s for s in found if s["type"] == "ProjectedOverrun"]

        overruns = await wait_for(overrun_seen, timeout=120, workers=[worker])
        overrun = ProjectedOverrun.parse(overruns[0])
        assert overrun.limit == limit
        assert overrun.projection.p50 > limit
        count_before = len(await forecast_seen())
        await wait_for(
            lambda: _more_forecasts(kafka_bootstrap, topic_prefix, budget_id, count_before + 2),
            timeout=60,
            workers=[worker],
        )
        assert len(await overrun_seen()) == 1  # once per period, though forecasts go on

        # The budget opted in: demoted on the projected overrun, at 80% (below 90).
        found = await policies(kafka_bootstrap, topic_prefix)
        mine = [p for p in found if p.get("budget_id") == budget_id]
        history = [(p["policy"], p["reason"], p["effective_at"]) for p in mine]
        assert mine, "no policy published for the budget"
        assert mine[-1]["policy"] == "degrade_route", history
        assert mine[-1]["target_model"] == "gpt-4o-mini"
    finally:
        worker.stop()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_a_projected_overrun_is_judged_against_the_effective_limit(
    kafka_bootstrap: str, topic_prefix: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child drew 1.5M from its parent's pool: 1.2M used is over its spec's 1M but not over
    the 2.5M it has. Judged against the spec, every forecast would announce an overrun (p50 is
    never below what is used); judged against the effective limit, only a p50 above 2.5M does,
    and then the event names 2.5M."""
    monkeypatch.setenv("ALLOTMENT_FORECAST_INTERVAL", "2")
    run = uuid.uuid4().hex[:8]
    tenant = f"t{run}"
    parent, child = f"{tenant}/org", f"{tenant}/copilot"
    child_spec = {
        "name": "copilot",
        "limits": {"total_tokens": 1_000_000},
        "parent": parent,
        "overflow_cap_tokens": 2_000_000,
    }
    parent_spec = {"name": "org", "limits": {"total_tokens": 10_000_000}}
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, parent, parent_spec), budget_event(tenant, child, child_spec)],
    )
    now = datetime.now(UTC)
    drawn = OverflowDrawn(
        tenant=tenant,
        occurred_at=now,
        actor="test",
        draw_id="d1",
        budget_id=child,
        parent_id=parent,
        period_key=period_of(Period(), now).key,
        tokens=1_500_000,
    )
    await publish_allocation(kafka_bootstrap, topic_prefix, drawn)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    worker = workers.start("w1", "--store", "memory")
    try:
        await send_usage(
            kafka_bootstrap,
            topic_prefix,
            [usage(f"{run}-a", tenant, now - timedelta(minutes=1), 600_000, 600_000)],
        )

        async def two_forecasts() -> list[dict]:
            found = await _signals(kafka_bootstrap, topic_prefix, child)
            updates = [s for s in found if s["type"] == "ForecastUpdated"]
            return updates if len(updates) >= 2 else []

        updates = await wait_for(two_forecasts, timeout=120, workers=[worker])
        p50s = [ForecastUpdated.parse(u).projections[0].p50 for u in updates]
        assert min(p50s) >= 1_200_000
        found = await _signals(kafka_bootstrap, topic_prefix, child)
        overruns = [ProjectedOverrun.parse(s) for s in found if s["type"] == "ProjectedOverrun"]
        assert all(o.limit == 2_500_000 for o in overruns), [o.limit for o in overruns]
        assert all(o.projection.p50 > 2_500_000 for o in overruns)
        if max(p50s) <= 2_500_000:
            assert overruns == []
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def _more_forecasts(bootstrap: str, prefix: str, budget_id: str, count: int) -> bool:
    found = await _signals(bootstrap, prefix, budget_id)
    return len([s for s in found if s["type"] == "ForecastUpdated"]) >= count
