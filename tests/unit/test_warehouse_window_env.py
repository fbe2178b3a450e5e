"""ALLOTMENT_DEDUPE_WINDOW_HOURS is the dedupe window of the worker and of every projection.

An operator who changes the worker's window must change the warehouse's too, or the warehouse
counts a re-used event id the ledger drops (or the other way round). One variable is the
default of `allotment worker`, `allotment warehouse`, `rebuild-projections` and the projection
in `allotment api` (whose consumer is built with no window); a flag still overrides it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

import streams.faust.worker as worker_module
from schemas.topics import USAGE
from services.common.kafka import partition_for
from services.warehouse.cli import _window
from services.warehouse.consumer import WarehouseConsumer
from streams.faust import cli as worker_cli
from streams.faust.app import InvalidWorkerConfig
from streams.periods import to_ms

ENV = "ALLOTMENT_DEDUPE_WINDOW_HOURS"


def test_the_worker_reads_its_window_from_the_environment_and_a_flag_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(worker_module, "run_worker", seen.append)
    app = typer.Typer()
    worker_cli.register(app)
    app.command("other")(lambda: None)  # more than one command: `worker` is a subcommand
    runner = CliRunner()
    result = runner.invoke(app, ["worker"], env={ENV: "2.5"})
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["worker", "--dedupe-window-hours", "3"], env={ENV: "2.5"})
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["worker"], env={ENV: ""})
    assert result.exit_code == 0, result.output
    windows = [config.dedupe_window for config in seen]
    assert windows == [timedelta(hours=2.5), timedelta(hours=3), timedelta(days=7)]


def test_the_warehouse_and_the_apis_projection_read_the_same_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "36")
    assert _window(None) == timedelta(hours=36)  # allotment warehouse, rebuild-projections
    assert _window(2) == timedelta(hours=2)
    consumer = WarehouseConsumer(None, "", "p")  # type: ignore[arg-type]  # as the API builds it
    assert consumer.projector.seen.window_ms == 36 * 3_600_000
    monkeypatch.delenv(ENV)
    consumer = WarehouseConsumer(None, "", "p")  # type: ignore[arg-type]
    assert consumer.projector.seen.window_ms == 7 * 24 * 3_600_000


@pytest.mark.parametrize("raw", ["a week", "0", "-1", "nan", "inf"])
def test_a_window_that_is_not_a_positive_number_of_hours_names_the_variable(raw: str) -> None:
    with pytest.raises(InvalidWorkerConfig) as caught:
        worker_cli.dedupe_window(env={ENV: raw})
    assert caught.value.setting == ENV
    assert "number of hours" in caught.value.rule


def test_a_bad_flag_is_named_as_the_flag() -> None:
    with pytest.raises(InvalidWorkerConfig) as caught:
        worker_cli.dedupe_window(0.0, env={ENV: "5"})
    assert caught.value.setting == "--dedupe-window-hours"


SKEW_ENV = "ALLOTMENT_CLOCK_SKEW_SECONDS"


def test_the_clock_skew_is_the_workers_ledger_cap_and_the_warehouse_ignores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The variable sets the worker's cap on a ledger's "now". It refuses no event: the
    warehouse reads what the worker reads whatever it says (before, with the skew at 0 the
    warehouse refused an event stamped a few minutes past its broker time)."""
    seen: list[Any] = []
    monkeypatch.setattr(worker_module, "run_worker", seen.append)
    app = typer.Typer()
    worker_cli.register(app)
    app.command("other")(lambda: None)
    runner = CliRunner()
    assert runner.invoke(app, ["worker"], env={SKEW_ENV: "60"}).exit_code == 0
    result = runner.invoke(app, ["worker", "--clock-skew-seconds", "0"], env={SKEW_ENV: "60"})
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["worker"], env={SKEW_ENV: ""}).exit_code == 0
    skews = [config.clock_skew for config in seen]
    assert skews == [timedelta(seconds=60), timedelta(0), timedelta(minutes=5)]
    monkeypatch.setenv(SKEW_ENV, "0")
    consumer = WarehouseConsumer(None, "", "p")  # type: ignore[arg-type]  # as the API builds it
    at = datetime(2026, 11, 20, 9, tzinfo=UTC)
    fast = (at + timedelta(minutes=10)).isoformat()
    event = {
        "type": "UsageRecorded", "version": 1, "event_id": "fast-1", "source": "t",
        "occurred_at": fast, "received_at": fast, "tenant": "acme", "output": 1,
    }  # fmt: skip
    home = partition_for("fast-1", USAGE.partitions)
    _, items = consumer.projector.reader.read(orjson.dumps(event), home, to_ms(at))
    [(_, _, read)] = list(items)
    assert isinstance(read, dict), read


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_skew_that_is_not_a_non_negative_number_names_the_variable(raw: str) -> None:
    with pytest.raises(InvalidWorkerConfig) as caught:
        worker_cli.clock_skew(env={SKEW_ENV: raw})
    assert caught.value.setting == SKEW_ENV
    assert "number of seconds" in caught.value.rule
