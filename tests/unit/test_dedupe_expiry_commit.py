"""Dedupe expiry waits for the commit of the takes it is measured against, and an index
database that cannot be opened is rebuilt from the table instead of ending every restart.

Review 18: a take's own latest record time used to be expiry's "now". A take spanning more
than window + slack expired (table delete included) the batch that made a copy earlier in the
same take a duplicate; killed before the take's offsets were committed, the worker read the
take again and charged that in-window copy a second time.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import rocksdict
from test_dedupe_window import _records

from streams.budgets import BudgetIndex
from streams.faust.dedupe_index import RocksDedupeIndex, restore_from_table
from streams.faust.dedupe_log import BatchRecord, DedupeIndex, MemoryDedupeIndex
from streams.faust.resolve import ResolvedBatch, Resolver, UsageRecord

WINDOW, SLACK = 100, 50


# X at t=10; X again at t=60 (inside the window); Y at t=300 (> 10 + window + slack)
RECORDS = _records([(["X"], 10), (["X"], 50), (["Y"], 240)])  # steps: t = 10, 60, 300


class _Worker:
    """The resolve agent's order of writes (table, then index, then expired keys out of the
    table), with `committed` the offset a restarted worker would read from."""

    def __init__(self, index: DedupeIndex, table: dict[bytes, bytes]) -> None:
        self.committed: int | None = None
        self.table = table
        self.resolver = Resolver("p.usage", 1, index, BudgetIndex, lambda p: self.committed)

    def take(self, records: list[UsageRecord]) -> ResolvedBatch:
        out = self.resolver.resolve(records)
        for record in out.records:
            self.table[record.key.encode()] = orjson.dumps(record.to_dict())
        for key in itertools.chain.from_iterable(self.resolver.keep(out).values()):
            self.table.pop(key.encode(), None)
        return out


def _memory(_path: Path) -> DedupeIndex:
    return MemoryDedupeIndex(WINDOW, SLACK)


def _rocks(path: Path) -> DedupeIndex:
    return RocksDedupeIndex(path / "idx", WINDOW, slack_ms=SLACK)


INDEXES = pytest.mark.parametrize("open_index", [_memory, _rocks], ids=["memory", "rocksdb"])


def _two_takes(index: DedupeIndex) -> _Worker:
    """Take 1 (X) committed, then take 2 (X again, Y far later), not committed."""
    worker = _Worker(index, {})
    restore_from_table(index, worker.table, [0])
    worker.take(RECORDS[:1])
    worker.committed = 1
    assert worker.take(RECORDS[1:]).duplicates == 1
    return worker


@INDEXES
def test_a_take_read_again_after_a_crash_still_finds_its_in_window_copy_a_duplicate(
    tmp_path: Path, open_index: Callable[[Path], DedupeIndex]
) -> None:
    index = open_index(tmp_path)
    table = _two_takes(index).table
    index.close()  # kill -9 before take 2's offsets were committed

    index = open_index(tmp_path)
    restore_from_table(index, table, [0])
    again = _Worker(index, table)
    again.committed = 1
    assert again.take(RECORDS[1:]).duplicates == 1  # not charged a second time
    index.close()


@INDEXES
def test_a_batch_expires_once_a_take_far_enough_after_it_is_committed(
    tmp_path: Path, open_index: Callable[[Path], DedupeIndex]
) -> None:
    index = open_index(tmp_path)
    worker = _two_takes(index)
    assert b"0:0.0-0.0" in worker.table  # take 2 not committed: X's batch kept
    worker.committed = 3
    out = worker.take(_records([(["Z"], 1)] * 4)[3:])  # offset 3
    assert out.expired == {0: ["0:0.0-0.0"]}
    assert b"0:0.0-0.0" not in worker.table
    index.close()


def test_without_committed_offsets_nothing_expires() -> None:
    index = MemoryDedupeIndex(WINDOW, SLACK)
    resolver = Resolver("p.usage", 1, index, BudgetIndex)
    for take in (RECORDS[:1], RECORDS[1:]):
        assert resolver.keep(resolver.resolve(take)) == {}
    assert index.size() == 2


def _filled(tmp_path: Path) -> tuple[Path, dict[bytes, bytes]]:
    """An index of partition 0 on disk and its table."""
    table: dict[bytes, bytes] = {}
    for offset in range(20):
        record = BatchRecord(0, offset, offset, 10, [f"id-{offset}"], [(offset, 0)], 0, 0)
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    index = RocksDedupeIndex(tmp_path / "idx", 10**9)
    restore_from_table(index, table, [0])
    index.close()
    return tmp_path / "idx", table


def test_an_index_whose_manifest_is_gone_is_rebuilt_from_the_table(tmp_path: Path) -> None:
    """A kill -9 part way through deleting a database (no MANIFEST, CURRENT left) made every
    restore raise, and the worker exit 70, forever."""
    path, table = _filled(tmp_path)
    for name in os.listdir(path / "usage-0"):
        if name.startswith("MANIFEST"):
            os.remove(path / "usage-0" / name)
    with pytest.raises(Exception, match="MANIFEST"):
        rocksdict.Rdict(str(path / "usage-0"), options=rocksdict.Options(raw_mode=True))
    index = RocksDedupeIndex(path, 10**9)
    restore_from_table(index, table, [0])
    assert index.rebuilds == 1
    assert [index.classify(0, f"id-{o}", (99, o), 10) for o in range(20)] == ["duplicate"] * 20
    assert index.classify(0, "other", (99, 20), 10) == "new"
    index.close()


def test_a_drop_interrupted_by_a_crash_is_finished_by_the_next_restore(tmp_path: Path) -> None:
    """`_drop` renames before deleting: what a crash leaves is a `.dropped` directory, swept."""
    path, table = _filled(tmp_path)
    (path / "usage-0").rename(path / "usage-0.dropped")  # killed right after the rename
    index = RocksDedupeIndex(path, 10**9)
    restore_from_table(index, table, [0])
    assert sorted(os.listdir(path)) == ["usage-0"]
    assert index.classify(0, "id-3", (99, 0), 10) == "duplicate"
    index.close()
