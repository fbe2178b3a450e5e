"""The projection: idempotent under duplicates and restarts, and a rebuild gives identical rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from api_harness import ALL_TABLES, api_harness, spec, unique

from schemas.signals import Band, ForecastUpdated, PolicyChanged, Projection, ThresholdCrossed
from schemas.topics import FORECASTS, POLICIES, THRESHOLDS, USAGE
from schemas.usage import UsageRecorded
from services.warehouse.consumer import ProjectionBusy, WarehouseConsumer
from services.warehouse.rebuild import rebuild

AT = datetime(2026, 11, 10, 9, tzinfo=UTC)
NOV, DEC = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def usage(tenant: str, event_id: str, tokens: int, **dims: str) -> UsageRecorded:
    return UsageRecorded(
        event_id=event_id,
        source="test",
        occurred_at=AT,
        received_at=AT,
        tenant=tenant,
        input_uncached=tokens,
        output=tokens,
        **dims,
    )


def signals(tenant: str, budget: str) -> list[tuple[str, object]]:
    crossed = ThresholdCrossed(
        tenant=tenant, budget_id=budget, period_key="2026-11", period_start=NOV, period_end=DEC,
        metric="total", threshold=75, consumed=80, limit=100, effective_limit=100, crossed_at=AT,
    )  # fmt: skip
    policy = PolicyChanged(
        tenant=tenant, budget_id=budget, period_key="2026-11", policy="alert_only",
        at_limit="alert_only", reason="75%", effective_at=AT, reset_at=None,
    )  # fmt: skip
    projection = Projection(
        metric="total", p50=120.0, band80=Band(low=100, high=140),
        band95=Band(low=90, high=160), method="weekday_mean", as_of=AT,
    )  # fmt: skip
    forecast = ForecastUpdated(
        tenant=tenant, budget_id=budget, period_key="2026-11", period_end=DEC,
        as_of=AT, days_of_history=9, projections=[projection],
    )  # fmt: skip
    return [(budget, crossed), (budget, policy), (budget, forecast)]


async def test_duplicates_count_once_and_a_rebuild_gives_identical_rows(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        key = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"
        org, team = unique("org"), unique("team")
        for budget_id, body in (
            (org, spec(10_000)),
            (team, spec(5_000, org, selector={"team": ["ml"]})),
        ):
            response = await h.client.post(
                base, json={"budget_id": budget_id, "spec": body, "reason": "r"}, headers=key
            )
            assert response.status_code == 201
        amended = await h.client.put(
            f"{base}/{org}",
            json={"expected_version": 1, "spec": spec(20_000), "reason": "more"},
            headers=key,
        )
        assert amended.status_code == 200
        events = [
            usage(tenant, "e1", 10, team="ml", feature="rag", request_model="m1"),
            usage(tenant, "e2", 20, team="ml", feature="rag", request_model="m2"),
            usage(tenant, "e3", 30, team="web"),
            usage(tenant, "e1", 10, team="ml", feature="rag", request_model="m1"),  # duplicate
            usage(tenant, "e\x004", 1, team="ml", feature="r\x00g"),  # PostgreSQL refuses NUL
        ]
        await h.produce(USAGE, [(e.event_id, e) for e in events])
        for spec_, (k, event) in zip(
            (THRESHOLDS, POLICIES, FORECASTS), signals(tenant, team), strict=True
        ):
            await h.produce(spec_, [(k, event), (k, event)])  # each one redelivered
        await h.project()

        live = {table.name: h.rows(table, [tenant]) for table in ALL_TABLES}
        by_budget = {r["budget_id"]: r["total_tokens"] for r in live["period_usage"]}
        assert by_budget == {org: 122, team: 62}
        team_days = [
            (r["feature"], r["events"]) for r in live["daily_usage"] if r["budget_id"] == team
        ]
        assert sorted(team_days) == [("rag", 1), ("rag", 1), ("r\ufffdg", 1)]
        assert len(live["thresholds"]) == len(live["policies"]) == len(live["forecasts"]) == 1
        assert [r["revision"] for r in live["budgets"] if r["budget_id"] == org] == [2]
        assert len(live["audit_log"]) == 3

        busy = WarehouseConsumer(h.engine, kafka_bootstrap, topic_prefix)
        with pytest.raises(ProjectionBusy):
            await busy.start()
        with pytest.raises(ProjectionBusy):
            await rebuild(h.engine, kafka_bootstrap, topic_prefix)
        await h.warehouse.stop()

        restarted = WarehouseConsumer(h.engine, kafka_bootstrap, topic_prefix)
        await restarted.start()
        try:
            assert await restarted.catch_up() == 0
        finally:
            await restarted.stop()

        totals: list[int] = []
        done: list[int] = []
        projected = await rebuild(
            h.engine, kafka_bootstrap, topic_prefix, on_total=totals.append, progress=done.append
        )
        # The total counts transaction markers too (one per API write), so it is an upper bound.
        assert 0 < projected == sum(done) <= totals[0]
        rebuilt = {table.name: h.rows(table, [tenant]) for table in ALL_TABLES}
        assert rebuilt == live
