"""`allotment forecast BUDGET` reads the newest projection of that budget from the topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fakes.kafka_io import send_events
from typer.testing import CliRunner

from schemas.signals import Band, ForecastUpdated, Projection
from schemas.topics import FORECASTS
from services.cli import build


def _forecast(budget_id: str, hour: int, p50: float) -> ForecastUpdated:
    as_of = datetime(2026, 11, 17, hour, tzinfo=UTC)
    return ForecastUpdated(
        tenant="acme",
        budget_id=budget_id,
        period_key="2026-11",
        period_end=datetime(2026, 12, 1, tzinfo=UTC),
        as_of=as_of,
        days_of_history=47,
        projections=[
            Projection(
                metric="total",
                p50=p50,
                band80=Band(low=p50 * 0.95, high=p50 * 1.05),
                band95=Band(low=p50 * 0.9, high=p50 * 1.1),
                method="ets_fast",
                as_of=as_of,
            )
        ],
    )


async def _publish(bootstrap: str, topic: str, events: list[ForecastUpdated]) -> None:
    await send_events(bootstrap, ((topic, e.budget_id, e) for e in events))


def test_forecast_command_prints_the_latest_projection(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    events = [
        _forecast("support-copilot", 9, 430e6),
        _forecast("support-copilot", 10, 451e6),
        _forecast("other", 11, 7e6),
    ]
    asyncio.run(_publish(kafka_bootstrap, FORECASTS.name(topic_prefix), events))
    env = {"ALLOTMENT_KAFKA_BOOTSTRAP": kafka_bootstrap, "ALLOTMENT_TOPIC_PREFIX": topic_prefix}
    result = CliRunner().invoke(build(), ["forecast", "support-copilot"], env=env)
    assert result.exit_code == 0, result.output
    assert "p50=451000000" in result.output
    assert "80% 428M-474M" in result.output
    assert "2026-11-17T10:00:00+00:00" in result.output

    missing = CliRunner().invoke(build(), ["forecast", "nobody"], env=env)
    assert missing.exit_code == 1
    assert "no forecast for budget 'nobody'" in missing.output
