"""`allotment warehouse` (the live projection) and `allotment rebuild-projections`."""

from __future__ import annotations

import asyncio
import signal
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import typer

WINDOW_HELP = (
    "Window of event_id dedupe in hours: the worker's --dedupe-window-hours "
    "[env ALLOTMENT_DEDUPE_WINDOW_HOURS, as the worker's; else the worker's default]"
)


def _window(hours: float | None) -> timedelta:
    """The worker's window as `allotment worker` would read it (flag, then environment)."""
    from streams.faust.app import InvalidWorkerConfig
    from streams.faust.cli import dedupe_window

    try:
        return dedupe_window(hours)
    except InvalidWorkerConfig as exc:
        raise typer.BadParameter(str(exc)) from None


def warehouse(
    dedupe_window_hours: float | None = typer.Option(None, help=WINDOW_HELP),
) -> None:
    """Project the topics into the PostgreSQL read models until interrupted."""
    from services.common.db import make_engine
    from services.common.kafka import ensure_topics
    from services.common.settings import StackSettings
    from services.warehouse.consumer import WarehouseConsumer

    settings = StackSettings.from_env()

    async def main() -> None:
        await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
        engine = make_engine(settings.database_url)
        consumer = WarehouseConsumer(
            engine,
            settings.kafka_bootstrap,
            settings.topic_prefix,
            dedupe_window=_window(dedupe_window_hours),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await consumer.start()
        try:
            await consumer.run(stop)
        finally:
            await consumer.stop()
            engine.dispose()

    asyncio.run(main())


def rebuild_projections(
    yes: bool = typer.Option(False, "--yes", help="Do not ask before emptying the tables."),
    dedupe_window_hours: float | None = typer.Option(None, help=WINDOW_HELP),
) -> None:
    """Empty the read models and project every topic again from offset zero.

    Stop `allotment warehouse` (and `allotment api --projection`) first. API keys are kept.
    """
    from services.common.db import make_engine
    from services.common.settings import StackSettings
    from services.warehouse.consumer import ProjectionBusy
    from services.warehouse.rebuild import rebuild

    settings = StackSettings.from_env()
    if not yes:
        typer.confirm(f"Empty and rebuild the read models of {settings.topic_prefix}?", abort=True)
    engine = make_engine(settings.database_url)
    try:
        with ExitStack() as stack:
            bars: list[Any] = []

            def on_total(total: int) -> None:
                bar = typer.progressbar(length=max(total, 1), label="projecting", show_pos=True)
                bars.append(stack.enter_context(bar))

            def progress(done: int) -> None:
                bars[0].update(done)

            count = asyncio.run(
                rebuild(
                    engine,
                    settings.kafka_bootstrap,
                    settings.topic_prefix,
                    on_total=on_total,
                    progress=progress,
                    dedupe_window=_window(dedupe_window_hours),
                )
            )
    except ProjectionBusy as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(f"rebuilt from {count} records")


def register(app: typer.Typer) -> None:
    app.command("warehouse")(warehouse)
    app.command("rebuild-projections")(rebuild_projections)
