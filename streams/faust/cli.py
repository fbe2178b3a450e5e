"""`allotment worker`: run one stream-pipeline worker (resolve, ledger, policy)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from schemas.topics import USAGE

DEDUPE_WINDOW_ENV = "ALLOTMENT_DEDUPE_WINDOW_HOURS"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def dedupe_window(hours: float | None = None, env: Mapping[str, str] | None = None) -> timedelta:
    """The worker's event_id dedupe window: `hours` (a flag) when given, else
    ALLOTMENT_DEDUPE_WINDOW_HOURS, else `WorkerConfig`'s default.

    Everything that must count the events the worker counts asks this (`allotment warehouse`,
    `rebuild-projections`, `api --projection`), so one variable set for the deployment keeps
    them all on the worker's window. A value that is not a positive number of hours raises
    `InvalidWorkerConfig` naming the flag or the variable.
    """
    from streams.faust.app import InvalidWorkerConfig, WorkerConfig

    setting = "--dedupe-window-hours"
    if hours is None:
        setting = DEDUPE_WINDOW_ENV
        raw = (os.environ if env is None else env).get(DEDUPE_WINDOW_ENV, "")
        if raw.strip() == "":
            return WorkerConfig(bootstrap="", topic_prefix="", store_dir=Path()).dedupe_window
        try:
            hours = float(raw)
        except ValueError:
            rule = f"must be a number of hours, got {raw!r}"
            raise InvalidWorkerConfig(setting, rule) from None
    if not (math.isfinite(hours) and hours > 0):
        raise InvalidWorkerConfig(setting, f"must be a positive number of hours, got {hours}")
    return timedelta(hours=hours)


def worker(
    broker: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [env ALLOTMENT_KAFKA_BOOTSTRAP]")
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="Topic prefix [env ALLOTMENT_TOPIC_PREFIX]")
    ] = None,
    store_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of the worker's table stores [env ALLOTMENT_STORE_DIR]"),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Table store: rocksdb (production) or memory [env ALLOTMENT_STORE]"),
    ] = None,
    partitions: Annotated[
        int, typer.Option(help="Partitions of usage and charges")
    ] = USAGE.partitions,
    web_port: Annotated[
        int | None,
        typer.Option(help="Port of /metrics, 0 for any free one [env ALLOTMENT_WORKER_WEB_PORT]"),
    ] = None,
    group: Annotated[
        str, typer.Option(help="Consumer group / app id (default: <prefix>.pipeline)")
    ] = "",
    instance_id: Annotated[
        str,
        typer.Option(
            help="Static group membership id: a restart takes its partitions back at once"
        ),
    ] = "",
    dedupe_window_hours: Annotated[
        float | None,
        typer.Option(help=f"Window of event_id dedupe (default 168) [env {DEDUPE_WINDOW_ENV}]"),
    ] = None,
    late_window_hours: Annotated[
        float, typer.Option(help="How late an event may still be charged")
    ] = 48,
    clock_skew_seconds: Annotated[
        float, typer.Option(help="How far (s) past its receipt an event may be stamped")
    ] = 300,
    batch_max: Annotated[int, typer.Option(help="Most usage records taken in one batch")] = 4000,
    batch_within: Annotated[float, typer.Option(help="Longest wait (s) to fill a batch")] = 0.05,
    session_timeout: Annotated[
        float, typer.Option(help="Consumer group session timeout (s)")
    ] = 10.0,
    reset_check_interval: Annotated[
        float, typer.Option(help="How often (s) to check resets")
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="Log level")] = "info",
) -> None:
    """Run a stream-pipeline worker: dedupe and match usage, keep ledgers, publish policy."""
    from services.common.settings import StackSettings
    from streams.faust.app import InvalidWorkerConfig, WorkerConfig
    from streams.faust.worker import STORE_DIR_LOCKED, StoreDirLocked, run_worker

    stack = StackSettings.from_env()
    try:
        window = dedupe_window(dedupe_window_hours)
    except InvalidWorkerConfig as exc:
        raise typer.BadParameter(str(exc)) from None
    config = WorkerConfig(
        bootstrap=broker or stack.kafka_bootstrap,
        topic_prefix=topic_prefix or stack.topic_prefix,
        store_dir=store_dir or Path(_env("ALLOTMENT_STORE_DIR", "./var/worker")),
        store=store or _env("ALLOTMENT_STORE", "rocksdb"),
        group=group,
        instance_id=instance_id,
        partitions=partitions,
        web_port=web_port
        if web_port is not None
        else int(_env("ALLOTMENT_WORKER_WEB_PORT", "6066")),
        dedupe_window=window,
        late_window=timedelta(hours=late_window_hours),
        clock_skew=timedelta(seconds=clock_skew_seconds),
        batch_max=batch_max,
        batch_within=batch_within,
        session_timeout=session_timeout,
        reset_check_interval=reset_check_interval,
        log_level=log_level,
    )
    try:
        run_worker(config.validate())
    except StoreDirLocked as exc:
        typer.echo(f"allotment worker: {exc}", err=True)
        raise typer.Exit(STORE_DIR_LOCKED) from None


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
