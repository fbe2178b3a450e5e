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
from schemas.usage import CLOCK_SKEW

DEDUPE_WINDOW_ENV = "ALLOTMENT_DEDUPE_WINDOW_HOURS"
CLOCK_SKEW_ENV = "ALLOTMENT_CLOCK_SKEW_SECONDS"


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
    from streams.faust.app import WorkerConfig

    default = WorkerConfig(bootstrap="", topic_prefix="", store_dir=Path()).dedupe_window
    return _duration(hours, "--dedupe-window-hours", DEDUPE_WINDOW_ENV, env, 3600, default)


def clock_skew(seconds: float | None = None, env: Mapping[str, str] | None = None) -> timedelta:
    """The worker's ledger cap: how far past a charge record's broker time its lines may move a
    ledger's "now". `seconds` (a flag) when given, else ALLOTMENT_CLOCK_SKEW_SECONDS, else
    `schemas.usage.CLOCK_SKEW`. It refuses no event (that is the contract's fixed `MAX_AHEAD`,
    the same for every reader), so the warehouse does not need it."""
    return _duration(seconds, "--clock-skew-seconds", CLOCK_SKEW_ENV, env, 1, CLOCK_SKEW, zero=True)


def _duration(
    value: float | None,
    flag: str,
    variable: str,
    env: Mapping[str, str] | None,
    unit_seconds: float,
    default: timedelta,
    zero: bool = False,
) -> timedelta:
    """A flag's value, else the environment variable's, else `default`; in `unit_seconds`.
    Must be finite and positive (or zero, with `zero`); the error names the flag or variable."""
    from streams.faust.app import InvalidWorkerConfig

    setting, unit = flag, "hours" if unit_seconds == 3600 else "seconds"
    if value is None:
        setting = variable
        raw = (os.environ if env is None else env).get(variable, "")
        if raw.strip() == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise InvalidWorkerConfig(setting, f"must be a number of {unit}, got {raw!r}") from None
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        kind = "a non-negative" if zero else "a positive"
        raise InvalidWorkerConfig(setting, f"must be {kind} number of {unit}, got {value}")
    return timedelta(seconds=value * unit_seconds)


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
        float | None,
        typer.Option(
            help="How far (s) past a charge record's broker time a ledger's 'now' may move; "
            "an event stamped further ahead is still charged, to its own period "
            "[env ALLOTMENT_CLOCK_SKEW_SECONDS; default 300]"
        ),
    ] = None,
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
        skew = clock_skew(clock_skew_seconds)
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
        clock_skew=skew,
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
