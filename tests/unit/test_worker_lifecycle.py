"""The worker's start, recovery and stop: what ends it, what refuses it, what it closes.

- a dedupe-index restore that fails inside Faust's recovery callback ends the process (70);
- a second worker on a store directory in use is refused at once (75, not 70);
- a revoke closes the dedupe index's databases;
- a refused forecast is logged and counted; a refused overrun is not marked announced.
No broker is needed: nothing here starts the app.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import Any

import faust
import pytest
import rocksdict
from aiokafka.errors import KafkaTimeoutError

import streams.faust.delivery as delivery
from schemas.topics import USAGE
from streams.budgets import BudgetIndex
from streams.faust.agents import Pipeline
from streams.faust.app import WorkerConfig, build_app
from streams.faust.delivery import REREAD, SendFailures
from streams.faust.forecasting import ForecastConfig, Forecaster
from streams.faust.metrics import WorkerMetrics
from streams.faust.worker import STORE_DIR_LOCKED, StoreDirLocked, store_dir_lock
from streams.forecast.signals import forecast_job

ROOT = Path(__file__).resolve().parents[2]
NO_BROKER = "127.0.0.1:1"

RESTORE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import streams.faust.agents as agents
    from streams.faust.agents import Pipeline
    from streams.faust.app import WorkerConfig, build_app
    from streams.faust.metrics import WorkerMetrics

    config = WorkerConfig("127.0.0.1:1", "unit-restore", Path(sys.argv[1]))
    pipeline = Pipeline(build_app(config), config, WorkerMetrics.build())

    async def no_broker() -> None: ...

    pipeline._remember_earliest = no_broker
    if sys.argv[2] == "fail":
        def locked(*args, **kwargs):
            raise OSError("IO error: lock .../usage-3/LOCK: Resource temporarily unavailable")
        agents.restore_from_table = locked

    async def main() -> None:
        # The shape of faust/tables/recovery.py Recovery.on_recovery_completed (0.15.3):
        # callbacks run in asyncio.wait, which never raises what they raise.
        fut = asyncio.ensure_future(pipeline.tables.dedupe.on_recovery_completed(set(), set()))
        await asyncio.wait([fut])
        print("recovery went on")

    asyncio.run(main())
    """
)


def _restore(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RESTORE, str(tmp_path), mode],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_failed_index_restore_ends_the_worker_instead_of_resuming(tmp_path: Path) -> None:
    failed = _restore(tmp_path / "a", "fail")
    assert failed.returncode == REREAD, failed.stderr[-2000:]
    assert "recovery went on" not in failed.stdout
    assert "dedupe index restore failed" in failed.stderr
    ok = _restore(tmp_path / "b", "ok")  # the same path without the failure goes on
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "recovery went on" in ok.stdout


def test_a_second_worker_on_a_store_dir_in_use_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with store_dir_lock(store):
        with pytest.raises(StoreDirLocked) as refused, store_dir_lock(store):
            pass
        assert str(store) in str(refused.value) and "--store-dir" in str(refused.value)
        cli = subprocess.run(
            [sys.executable, "-m", "services.cli", "worker", "--broker", NO_BROKER,
             "--topic-prefix", "unit-locked", "--store-dir", str(store), "--web-port", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == STORE_DIR_LOCKED != REREAD, cli.stderr[-2000:]
        assert str(store) in cli.stderr and "--store-dir" in cli.stderr
    with store_dir_lock(store):  # released with its holder
        pass


def test_the_store_dir_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    hold = (
        "import sys, time\nfrom pathlib import Path\n"
        "from streams.faust.worker import store_dir_lock\n"
        "with store_dir_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreDirLocked), store_dir_lock(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    with store_dir_lock(tmp_path):  # no stale lock after kill -9
        pass


async def test_a_revoke_closes_the_dedupe_index(tmp_path: Path) -> None:
    config = WorkerConfig(NO_BROKER, "unit-revoke", tmp_path)
    app = build_app(config)
    pipeline = Pipeline(app, config, WorkerMetrics.build())
    pipeline.dedupe.classify(0, "e-1", (5, 0))  # opens usage partition 0's database
    path = str(tmp_path / f"{config.app_id}-dedupe-index" / "usage-0")
    with pytest.raises(Exception, match="lock"):
        rocksdict.Rdict(path)
    await app.on_partitions_revoked.send({faust.types.TP(USAGE.name("unit-revoke"), 0)})
    rocksdict.Rdict(path).close()  # RocksDB lets another opener in: the index let go


def test_a_refused_forecast_is_counted_and_a_refused_table_write_is_not(
    monkeypatch: Any,
) -> None:
    exits: list[str] = []
    monkeypatch.setattr(delivery, "exit_to_reread", lambda message, exc, **_: exits.append(message))
    sensor = SendFailures(derived={"p.forecasts"})
    failure = KafkaTimeoutError()
    sensor.on_send_error(None, failure, sensor.on_send_initiated(None, "p.forecasts", None, 0, 0))
    assert (sensor.refused, exits) == (1, [])
    sensor.on_send_error(None, failure, sensor.on_send_initiated(None, "p.policies", None, 0, 0))
    assert sensor.refused == 1 and len(exits) == 1


class _Forecasts:
    """The forecasts topic: each send's delivery fails when `refuse` says so."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.sent: list[bytes] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self.sent) in self.refuse:
            delivery.set_exception(KafkaTimeoutError())
        else:
            delivery.set_result(None)
        self.sent.append(value)
        return delivery


@pytest.mark.parametrize("refuse", [set(), {1}])
async def test_an_overrun_is_marked_announced_only_once_acknowledged(
    tmp_path: Path, refuse: set[int]
) -> None:
    from test_forecast_signals import _budget, _daily_usage

    budget = _budget(250_000)
    app = build_app(WorkerConfig(NO_BROKER, "unit-overrun", tmp_path, store="memory"))
    charges = app.topic("unit-overrun.charges", key_serializer="raw", value_serializer="raw")
    index = BudgetIndex([budget])
    forecaster = Forecaster(app, charges, charges, lambda: index, ForecastConfig(processes=0))
    forecaster.days = {}  # type: ignore[assignment]  # a dict: no changelog producer
    forecaster.forecasts = topic = _Forecasts(refuse)  # type: ignore[assignment]
    usage = _daily_usage(date(2026, 10, 1), 45, 10_000)
    as_of = datetime(2026, 11, 15, 5, 0).isoformat() + "+00:00"
    out = forecast_job({"budget": budget.to_dict(), "usage": usage.to_dict(), "as_of": as_of})
    assert out["overrun"] is not None

    await forecaster.publish(out)
    assert len(topic.sent) == 2
    announced = forecaster.overrun_announced(budget.budget_id, "2026-11")
    assert announced is (not refuse)
    assert forecaster.refused == len(refuse)


SEND_RAISES = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from faust.exceptions import ProducerSendError
    from streams.faust.app import WorkerConfig, build_app

    app = build_app(WorkerConfig("127.0.0.1:1", "unit-raise", Path(sys.argv[1])))
    topic = app.topic("unit-raise.policies", key_serializer="raw", value_serializer="raw")

    async def too_large(fut, wait=False):
        raise ProducerSendError("MessageSizeTooLargeError: 9 MB")

    topic.publish_message = too_large

    async def main() -> None:
        buffer = app.producer.buffer  # the buffer alone: nothing reaches a broker
        await buffer.start()
        topic.send_soon(key=b"k", value=b"v")
        await buffer.flush()
        print("flush returned")

    asyncio.run(main())
    """
)


def test_a_table_write_that_cannot_be_sent_ends_the_worker(tmp_path: Path) -> None:
    """Faust's buffer task would crash on it and its flush return: the offsets committed."""
    run = subprocess.run(
        [sys.executable, "-c", SEND_RAISES, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == REREAD, run.stderr[-2000:]
    assert "flush returned" not in run.stdout
    assert "a table write could not be sent" in run.stderr


SEND_STALLS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from streams.faust.app import WorkerConfig, build_app

    app = build_app(WorkerConfig("127.0.0.1:1", "unit-stall", Path(sys.argv[1])))
    app.conf.producer_request_timeout = 0.05
    topic = app.topic("unit-stall.policies", key_serializer="raw", value_serializer="raw")

    async def cancelled(fut, wait=False):
        raise asyncio.CancelledError()  # aiokafka's send, cancelled while its producer closes

    async def never_acknowledged(fut, wait=False):
        return fut  # queued, but nothing ever resolves the delivery

    topic.publish_message = cancelled if sys.argv[2] == "cancelled" else never_acknowledged

    async def main() -> None:
        buffer = app.producer.buffer  # the buffer alone: nothing reaches a broker
        buffer.flush_margin = 0.05
        await buffer.start()
        topic.send_soon(key=b"tenant-7", value=b"v")
        await buffer.flush()
        print("flush returned")

    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    ("mode", "logged"),
    [
        ("cancelled", "a table write's send was cancelled"),
        ("unresolved", "table writes were not acknowledged in time"),
    ],
)
def test_a_table_write_that_is_never_acknowledged_ends_the_worker(
    tmp_path: Path, mode: str, logged: str
) -> None:
    """A send cancelled from inside ended the buffer's task, and a delivery nothing resolves
    kept the flush (and so every offset commit) waiting forever; both now exit 70 and log the
    write's topic and key."""
    try:
        run = subprocess.run(
            [sys.executable, "-c", SEND_STALLS, str(tmp_path), mode],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the flush never returned nor ended the process")
    assert run.returncode == REREAD, run.stderr[-2000:]
    assert "flush returned" not in run.stdout
    assert logged in run.stderr
    assert "unit-stall.policies" in run.stderr and "tenant-7" in run.stderr


BUFFER_STOPS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from streams.faust.app import WorkerConfig, build_app

    app = build_app(WorkerConfig("127.0.0.1:1", "unit-stop", Path(sys.argv[1])))
    topic = app.topic("unit-stop.policies", key_serializer="raw", value_serializer="raw")

    async def waits(fut, wait=False):
        await asyncio.Event().wait()  # aiokafka's send waiting for room in its accumulator

    topic.publish_message = waits

    async def main() -> None:
        buffer = app.producer.buffer
        await buffer.start()
        topic.send_soon(key=b"k", value=b"v")
        await asyncio.sleep(0.01)  # the buffer's task is inside the send
        await buffer._stop_futures()  # how mode cancels the task when the buffer stops
        print("task cancelled")

    asyncio.run(main())
    """
)


def test_the_buffer_task_cancelled_by_its_own_stop_does_not_end_the_worker(
    tmp_path: Path,
) -> None:
    """The other side of the rule above: a stop cancels the task, and that is no failure."""
    run = subprocess.run(
        [sys.executable, "-c", BUFFER_STOPS, str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "task cancelled" in run.stdout
