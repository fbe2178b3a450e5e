"""`allotment forecast BUDGET`: the current period-end projection and its bands."""

from __future__ import annotations

import asyncio

import typer

from schemas.signals import ForecastUpdated


def tokens(value: float) -> str:
    """Three significant digits with a unit, rounded to nearest: 428_450_000 -> '428M'."""
    for size, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            scaled = value / size
            digits = 0 if scaled >= 100 else (1 if scaled >= 10 else 2)
            return f"{scaled:.{digits}f}{unit}"
    return f"{value:.0f}"


def render(event: ForecastUpdated) -> str:
    """The projection as a person reads it: p50 and the 80/95 bands per limited metric."""
    lines = [
        f"budget {event.budget_id} (tenant {event.tenant}), period {event.period_key} "
        f"ending {event.period_end.isoformat()}",
        f"as of {event.as_of.isoformat()}, from {event.days_of_history} days of history",
    ]
    for p in event.projections:
        lines.append(
            f"  {p.metric:<6} p50 {tokens(p.p50):>6}   "
            f"80% {tokens(p.band80.low)}-{tokens(p.band80.high)}   "
            f"95% {tokens(p.band95.low)}-{tokens(p.band95.high)}   "
            f"[{p.method}]  p50={p.p50:.0f}"
        )
    return "\n".join(lines)


def forecast(
    budget_id: str = typer.Argument(..., help="The budget to show."),
    tenant: str | None = typer.Option(None, help="Only a forecast of this tenant's budget."),
    as_json: bool = typer.Option(False, "--json", help="Print the ForecastUpdated event."),
) -> None:
    """Print the latest projection of BUDGET's period-end consumption, with its bands."""
    import orjson

    from services.common.settings import StackSettings
    from services.forecast.latest import latest_forecast

    settings = StackSettings.from_env()
    event = asyncio.run(
        latest_forecast(settings.kafka_bootstrap, settings.topic_prefix, budget_id, tenant)
    )
    if event is None:
        typer.echo(
            f"no forecast for budget {budget_id!r} on {settings.topic_prefix}.forecasts yet "
            "(the forecast agent publishes one per budget every hour)",
            err=True,
        )
        raise typer.Exit(code=1)
    if as_json:
        typer.echo(orjson.dumps(event.to_wire(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render(event))


def register(app: typer.Typer) -> None:
    app.command("forecast")(forecast)
