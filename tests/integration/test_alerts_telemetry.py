"""Budget events reach a local OTLP/HTTP collector (logs + metrics) and Prometheus /metrics."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from fakes import alert_events as ev
from fakes.alerts_harness import SECRET, produce, service, settings, until, write_config
from fakes.net import free_port
from fakes.receivers import FakeReceivers

from schemas.topics import BUDGETS, FORECASTS, THRESHOLDS


async def test_otlp_logs_and_metrics_and_prometheus(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    port = free_port()
    events = [
        (BUDGETS, ev.budget(tenant, leaf)),
        (FORECASTS, ev.forecast(tenant, leaf, p50=455e6)),
        (THRESHOLDS, ev.crossed(tenant, leaf, 90, projection=None)),
    ]
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("hook",))
        alerts = settings(
            kafka_bootstrap, database_url, topic_prefix, path, otlp=rx.url, metrics_port=port
        )
        await produce(kafka_bootstrap, topic_prefix, events)
        async with service(alerts) as task:

            def exported() -> bool:
                points = rx.metric_points("allotment.budget.projection")
                mine = [p for p in points if p["attrs"].get("allotment.budget.id") == leaf]
                return len(rx.webhooks_processed) == 1 and len(mine) >= 5

            assert await until(exported, alive=task)
            delivered = (
                'allotment_alerts_deliveries_total{channel_type="webhook",outcome="delivered"} 1.0'
            )
            scraped: list[str] = []

            def scrape() -> bool:
                scraped.append(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
                return delivered in scraped[-1]

            assert await until(scrape, alive=task)

        records = [r for r in rx.log_records() if r["attrs"].get("allotment.budget.id") == leaf]
        kinds = {r["attrs"]["allotment.event.type"] for r in records}
        assert kinds == {"ForecastUpdated", "ThresholdCrossed"}
        crossing = next(
            r for r in records if r["attrs"]["allotment.event.type"] == "ThresholdCrossed"
        )
        assert crossing["attrs"]["allotment.tenant"] == tenant
        assert crossing["attrs"]["allotment.threshold"] == 90
        assert crossing["eventName"] == "allotment.budget.ThresholdCrossed"

        def latest(name: str, point: str | None = None) -> float:
            values = [
                p["value"]
                for p in rx.metric_points(name)
                if p["attrs"].get("allotment.budget.id") == leaf
                and (point is None or p["attrs"].get("allotment.point") == point)
            ]
            return values[-1]

        assert latest("allotment.budget.consumption") == 378_000_000
        assert latest("allotment.budget.limit") == 420_000_000
        assert latest("allotment.budget.projection", "p50") == 455e6
        assert latest("allotment.budget.projection", "p95_high") > 455e6

        labels = f'budget_id="{leaf}",metric="total",tenant="{tenant}"'
        assert f"allotment_budget_consumed_tokens{{{labels}}} 3.78e+08" in scraped[-1]
        assert f"allotment_budget_projected_tokens{{{labels}}} 4.55e+08" in scraped[-1]
