"""The dedupe index's restore runs off the event loop and never beside another use of the index.

- the loop runs other tasks (aiokafka's heartbeats, in the worker) while a restore runs;
- a revoke's close waits for a running restore; so does a close from another thread;
- a recovery callback cancelled mid-restore leaves its restore running, and the next restore
  and the resolve agent wait for it;
- a restore that fails in its thread still ends the process (70), cancelled callback or not.
Gates are `threading.Event`s with a bound: on a restore that runs on the loop, nothing can
open them, so the bound ends the wait and the test fails on what it then sees.
No broker is needed: nothing here starts the app.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
import rocksdict

import streams.faust.agents as agents
import streams.faust.dedupe_restore as dedupe_restore
from schemas.topics import USAGE
from streams.faust.agents import Pipeline
from streams.faust.app import WorkerConfig, build_app
from streams.faust.dedupe_index import RocksDedupeIndex, restore_from_table
from streams.faust.dedupe_log import BatchRecord
from streams.faust.delivery import REREAD
from streams.faust.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
NO_BROKER = "127.0.0.1:1"
WINDOW_MS = 7 * 86_400_000
GATE_BOUND_S = 5.0


def _table(records: int, ids: int) -> dict[bytes, bytes]:
    """A dedupe table of usage partition 0: `records` batch records of `ids` ids each."""
    table: dict[bytes, bytes] = {}
    for offset in range(records):
        names = [f"e-{offset}-{i}" for i in range(ids)]
        record = BatchRecord(0, offset, offset, 1_000 + offset, names,
                             [(offset, i) for i in range(ids)], 0, ids - 1,
                             [1_000 + offset] * ids)  # fmt: skip
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    return table


class GatedTable(dict[bytes, bytes]):
    """A table whose key walk stops after its first key until `gate` opens (or the bound)."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        super().__init__(data)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.opened: bool | None = None

    def keys(self) -> Iterator[bytes]:  # type: ignore[override]
        for n, key in enumerate(list(super().keys())):
            if n == 1:
                self.entered.set()
                self.opened = self.gate.wait(GATE_BOUND_S)
            yield key


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every exit_to_reread, recorded instead of ending pytest."""
    calls: list[str] = []

    def record(message: str, exc: BaseException, **_: Any) -> None:
        calls.append(f"{message}: {exc!r}")

    monkeypatch.setattr(agents, "exit_to_reread", record)
    monkeypatch.setattr(dedupe_restore, "exit_to_reread", record, raising=False)
    return calls


def _pipeline(tmp_path: Path, name: str) -> Pipeline:
    config = WorkerConfig(NO_BROKER, name, tmp_path)
    pipeline = Pipeline(build_app(config), config, WorkerMetrics.build())

    async def no_broker() -> None: ...

    pipeline._remember_earliest = no_broker  # type: ignore[method-assign]
    return pipeline


def _restoring(monkeypatch: pytest.MonkeyPatch, table: Any, partitions: set[int]) -> None:
    """The pipeline's restore reads `table` (a dict) instead of the empty Faust store."""
    monkeypatch.setattr(
        agents, "restore_from_table", lambda index, _store, _owned: restore_from_table(
            index, table, partitions)
    )  # fmt: skip


async def _until(done: Callable[[], bool]) -> None:
    """Turn the loop until `done` (bounded: a blocked loop makes it true or the test fails)."""
    for _ in range(1_000):
        if done():
            return
        await asyncio.sleep(0.01)


def _is_duplicate(index: RocksDedupeIndex, table: dict[bytes, bytes], every: int) -> bool:
    records = [BatchRecord.from_dict(orjson.loads(v)) for v in table.values()][::every]
    return all(
        index.classify(0, r.ids[-1], (r.last_offset + 10**6, 0), r.record_time_ms) == "duplicate"
        for r in records
    )


async def test_the_loop_runs_other_tasks_while_a_large_index_is_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: list[str]
) -> None:
    pipeline = _pipeline(tmp_path, "unit-restore-ticks")
    table = _table(3_000, 20)
    inside = threading.Event()

    def traced(index: Any, _store: Any, _owned: Any) -> None:
        inside.set()
        try:
            restore_from_table(index, table, {0})
        finally:
            inside.clear()

    monkeypatch.setattr(agents, "restore_from_table", traced)
    ticks = 0
    finished = False

    async def tick() -> None:
        nonlocal ticks
        while not finished:
            ticks += inside.is_set()  # a turn of the loop taken while the restore runs
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    await pipeline._rebuild_dedupe_index()
    finished = True
    await ticker
    assert exits == []
    assert ticks > 0  # 0 when the restore holds the loop
    assert isinstance(pipeline.dedupe, RocksDedupeIndex)
    assert _is_duplicate(pipeline.dedupe, table, 97)
    pipeline.dedupe.close()


async def test_a_revoke_during_a_restore_waits_for_it_and_closes_a_whole_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: list[str]
) -> None:
    pipeline = _pipeline(tmp_path, "unit-restore-revoke")
    table = _table(200, 10)
    gated = GatedTable(table)
    _restoring(monkeypatch, gated, {0})
    restoring = asyncio.ensure_future(pipeline._rebuild_dedupe_index())
    await _until(gated.entered.is_set)
    usage = faust.types.TP(USAGE.name("unit-restore-revoke"), 0)
    revoke = asyncio.ensure_future(pipeline.app.on_partitions_revoked.send({usage}))
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert not revoke.done()  # the close waits while the restore still reads its databases
    gated.gate.set()
    await asyncio.gather(restoring, revoke)
    assert gated.opened is True and exits == []
    index = pipeline.dedupe
    assert isinstance(index, RocksDedupeIndex)
    path = tmp_path / f"{pipeline.config.app_id}-dedupe-index" / "usage-0"
    rocksdict.Rdict(str(path)).close()  # closed: another opener gets the lock
    index.restore(table, {0})  # what the restore wrote is whole: nothing to merge or rebuild
    assert index.rebuilds == 0 and _is_duplicate(index, table, 1)
    index.close()


def test_a_close_from_another_thread_waits_for_a_running_restore(tmp_path: Path) -> None:
    """The worker's last `close` runs after the loop ended, maybe beside a restore's thread."""
    table = _table(200, 10)
    gated = GatedTable(table)
    index = RocksDedupeIndex(tmp_path / "index", WINDOW_MS)
    failures: list[BaseException] = []

    def restore() -> None:
        try:
            index.restore(gated, {0})
        except BaseException as exc:  # a use after close, seen by the test
            failures.append(exc)

    restorer = threading.Thread(target=restore)
    restorer.start()
    assert gated.entered.wait(GATE_BOUND_S)
    closer = threading.Thread(target=index.close)
    closer.start()
    closer.join(0.2)
    still_closing = closer.is_alive()
    gated.gate.set()
    restorer.join()
    closer.join()
    assert still_closing  # it waited for the restore instead of closing under it
    assert failures == [] and gated.opened is True
    index.restore(table, {0})
    assert index.rebuilds == 0 and _is_duplicate(index, table, 1)
    index.close()


async def test_a_cancelled_restore_callback_is_not_overlapped_by_the_next_or_by_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exits: list[str]
) -> None:
    pipeline = _pipeline(tmp_path, "unit-restore-cancel")
    steps: list[str] = []
    active = 0
    most = 0
    entered, gate = threading.Event(), threading.Event()
    opened: list[bool] = []
    guard = threading.Lock()

    def restore(_index: Any, _store: Any, _owned: Any) -> None:
        nonlocal active, most
        with guard:
            run = sum(step.startswith("enter") for step in steps)
            steps.append(f"enter {run}")
            active += 1
            most = max(most, active)
        if run == 0:
            entered.set()
            opened.append(gate.wait(GATE_BOUND_S))
        with guard:
            steps.append(f"exit {run}")
            active -= 1

    monkeypatch.setattr(agents, "restore_from_table", restore)
    first = asyncio.ensure_future(pipeline._rebuild_dedupe_index())
    await _until(entered.is_set)
    first.cancel()  # a new rebalance (or a stop) cancels the callback, not its thread
    await asyncio.gather(first, return_exceptions=True)
    second = asyncio.ensure_future(pipeline._rebuild_dedupe_index())
    resolve = asyncio.ensure_future(pipeline.resolve_batch([]))
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert first.cancelled()  # it was still waiting for its restore
    assert steps == ["enter 0"] and not resolve.done()
    gate.set()
    await asyncio.gather(second, resolve)
    assert opened == [True] and exits == []
    assert steps == ["enter 0", "exit 0", "enter 1", "exit 1"] and most == 1
    pipeline.dedupe.close()


async def test_a_failure_while_the_app_stops_is_logged_not_an_exit(exits: list[str]) -> None:
    """A stop clears Faust's store under a running restore; the next start restores again."""
    stopping = dedupe_restore.IndexRestores[None](lambda: True)

    def broken() -> None:
        raise RuntimeError("dictionary changed size during iteration")

    with pytest.raises(dedupe_restore.RestoreFailed):
        await stopping.run(broken)
    assert exits == []
    running = dedupe_restore.IndexRestores[None](lambda: False)
    with pytest.raises(dedupe_restore.RestoreFailed):
        await running.run(broken)
    assert len(exits) == 1 and "dictionary changed size" in exits[0]


FAIL_AFTER_CANCEL = textwrap.dedent(
    """
    import asyncio, sys, threading
    from pathlib import Path
    import streams.faust.agents as agents
    from streams.faust.agents import Pipeline
    from streams.faust.app import WorkerConfig, build_app
    from streams.faust.metrics import WorkerMetrics

    config = WorkerConfig("127.0.0.1:1", "unit-restore-fail", Path(sys.argv[1]))
    pipeline = Pipeline(build_app(config), config, WorkerMetrics.build())

    async def no_broker() -> None: ...

    pipeline._remember_earliest = no_broker
    entered, gate = threading.Event(), threading.Event()

    def failing(*args, **kwargs):
        entered.set()
        if gate.wait(float(sys.argv[2])):  # opened by the loop: the restore runs off it
            raise OSError("IO error: No space left on device")

    agents.restore_from_table = failing

    async def main() -> None:
        callback = asyncio.ensure_future(pipeline.tables.dedupe.on_recovery_completed(set(), set()))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        callback.cancel()
        gate.set()
        for _ in range(500):
            await asyncio.sleep(0.01)
        print("recovery went on")

    asyncio.run(main())
    """
)


def test_a_restore_failing_in_its_thread_after_its_callback_was_cancelled_exits_70(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-c", FAIL_AFTER_CANCEL, str(tmp_path), str(GATE_BOUND_S)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == REREAD, run.stderr[-2000:]
    assert "recovery went on" not in run.stdout
    assert "dedupe index restore failed" in run.stderr and "No space left" in run.stderr
