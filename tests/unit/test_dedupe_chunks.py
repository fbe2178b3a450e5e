"""A take's dedupe history is cut into records that fit a Kafka message, and reads back whole.

The broker refuses a message over 1 MB: one record holding every id of a 4,000-envelope take
(MessageSizeTooLargeError) ended the worker and read the take again, forever under a backlog.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import rocksdict

from services.common.usage_producer import pack_envelopes
from streams.budgets import BudgetIndex
from streams.faust.dedupe_index import RocksDedupeIndex, restore_from_table
from streams.faust.dedupe_log import (
    MAX_RECORD_BYTES,
    MAX_RECORD_IDS,
    BatchRecord,
    DedupeIndex,
    MemoryDedupeIndex,
    key_span,
)
from streams.faust.resolve import ResolvedBatch, Resolver, UsageRecord

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MESSAGE_LIMIT = 1_000_000


def _event(event_id: str) -> dict[str, object]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": event_id, "source": "t",
        "occurred_at": AT.isoformat(), "received_at": AT.isoformat(), "tenant": "acme",
        "input_uncached": 10, "output": 1,
    }  # fmt: skip


def _take(ids: list[str], first_offset: int = 0, size: int = 500) -> list[UsageRecord]:
    """Envelopes of `size` events on partition 0 (one partition: every id hashes to it)."""
    packed = pack_envelopes([_event(i) for i in ids], 1, size)
    return [UsageRecord(0, first_offset + o, 1_000 + o, v) for o, (_, _, v) in enumerate(packed)]


def _resolver(index: DedupeIndex) -> Resolver:
    return Resolver("p.usage", 1, index, BudgetIndex)


def _written(resolver: Resolver, out: ResolvedBatch, table: dict[bytes, bytes]) -> None:
    """What the agent does: the records into the table, then to the index; expired keys out."""
    for record in out.records:
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    for keys in resolver.keep(out).values():
        for key in keys:
            table.pop(key.encode(), None)


def test_a_take_with_more_ids_than_a_record_holds_gives_several_records_each_under_the_bound() -> (
    None
):
    ids = [f"{i:08d}-0000-4000-8000-{i:012d}" for i in range(2 * MAX_RECORD_IDS + 1234)]
    out = _resolver(MemoryDedupeIndex(10**9)).resolve(_take(ids))
    assert len(out.records) >= 3
    for record in out.records:
        assert 1 <= len(record.ids) <= MAX_RECORD_IDS
        assert len(orjson.dumps(record.to_dict())) <= MAX_RECORD_BYTES < MESSAGE_LIMIT
    keys = [record.key for record in out.records]
    assert len(set(keys)) == len(keys)
    assert sorted(keys, key=key_span) == keys  # keys sort in position order
    positions = [p for record in out.records for p in record.positions]
    assert positions == sorted(positions)
    assert [i for record in out.records for i in record.ids] == ids
    for record in out.records:
        _, (o1, i1, o2, i2) = key_span(record.key)
        assert record.positions[0] == (o1, i1) and record.positions[-1] == (o2, i2)


def test_long_and_escaped_ids_are_cut_by_bytes() -> None:
    """200 characters an id (the contract's most), of which none is plain ASCII: the ids alone
    would be several MB in one record."""
    ids = [f"{i:05d}" + "é\x01" * 97 + "x" for i in range(6_000)]
    out = _resolver(MemoryDedupeIndex(10**9)).resolve(_take(ids, size=100))
    assert len(out.records) > 1
    for record in out.records:
        assert len(orjson.dumps(record.to_dict())) <= MAX_RECORD_BYTES
    assert [i for record in out.records for i in record.ids] == ids


def test_after_a_restart_or_a_move_the_index_answers_the_same_from_cut_records(
    tmp_path: Path,
) -> None:
    ids = [f"id-{i}" for i in range(MAX_RECORD_IDS + 4_000)]
    take = _take(ids)
    table: dict[bytes, bytes] = {}
    index = RocksDedupeIndex(tmp_path / "mine", 10**9, block_cache=1 << 20, write_buffer=1 << 20)
    restore_from_table(index, table, [0])
    resolver = _resolver(index)
    _written(resolver, resolver.resolve(take), table)
    assert len(table) >= 2
    index.close()

    for path in (tmp_path / "mine", tmp_path / "other"):  # restart; a fresh disk (a move)
        again = RocksDedupeIndex(path, 10**9, block_cache=1 << 20, write_buffer=1 << 20)
        restore_from_table(again, table, [0])
        assert again.rebuilds == 0
        resolver = _resolver(again)
        replay = resolver.resolve(take)  # the same records again: same positions
        assert (replay.redeliveries, replay.duplicates) == (len(ids), 0)
        copies = resolver.resolve(_take(ids, first_offset=1_000))
        assert (copies.duplicates, copies.events_in) == (len(ids), len(ids))
        again.close()


def test_cut_records_expire_under_their_own_keys_and_old_single_key_records_still_read(
    tmp_path: Path,
) -> None:
    table: dict[bytes, bytes] = {}
    legacy = BatchRecord(0, 0, 0, 100, ["old"], [(0, 0)])  # written before records were cut
    table[legacy.key.encode()] = orjson.dumps(legacy.to_dict())
    for index in (
        MemoryDedupeIndex(1_000, slack_ms=0),
        RocksDedupeIndex(tmp_path / "idx", 1_000, slack_ms=0),
    ):
        mine = dict(table)
        restore_from_table(index, mine, [0])
        assert index.classify(0, "old", (1, 0), 100) == "duplicate"
        resolver = _resolver(index)
        out = resolver.resolve(_take([f"n{i}" for i in range(MAX_RECORD_IDS + 1)], 1))
        _written(resolver, out, mine)
        assert len(out.records) == 2 and legacy.key.encode() in mine
        assert index.expire(0, 1_101) == [legacy.key]
        newest = max(r.record_time_ms for r in out.records)
        assert index.expire(0, newest + 1_001) == [r.key for r in out.records]
        assert index.classify(0, "n5", (9, 0), newest + 1_001) == "new"
        index.close()


def test_a_crash_after_the_table_write_and_before_the_index_write_is_a_merge(
    tmp_path: Path,
) -> None:
    """The table is written first: the index can only be behind it, never ahead."""
    table: dict[bytes, bytes] = {}
    index = RocksDedupeIndex(tmp_path / "idx", 10**9)
    restore_from_table(index, table, [0])
    out = _resolver(index).resolve(_take(["a", "b"]))
    for record in out.records:
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    index.close()  # killed before `keep`

    index = RocksDedupeIndex(tmp_path / "idx", 10**9)
    restore_from_table(index, table, [0])
    assert index.rebuilds == 0
    assert index.classify(0, "a", (7, 0), 1_000) == "duplicate"
    index.close()


def test_an_index_in_the_older_layout_is_rebuilt_from_the_table(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    old = rocksdict.Rdict(str(path / "usage-0"), options=rocksdict.Options(raw_mode=True))
    old.put(b"eghost", b"\0" * 12)  # an id the table does not hold, no version key
    old.close()
    record = BatchRecord(0, 3, 3, 10, ["a"], [(3, 0)], 0, 0)
    table = {record.key.encode(): orjson.dumps(record.to_dict())}
    index = RocksDedupeIndex(path, 10**9)
    restore_from_table(index, table, [0])
    assert index.rebuilds == 1
    assert index.classify(0, "ghost", (5, 0), 10) == "new"
    assert index.classify(0, "a", (5, 1), 10) == "duplicate"
    index.close()


class _FailingTable(dict[bytes, bytes]):
    """A table whose reads fail after `left` of them (a RocksDB read error mid-restore)."""

    left = 3

    def __getitem__(self, key: bytes) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise OSError("read failed")
        return super().__getitem__(key)


def test_a_restore_that_failed_half_way_is_completed_by_the_next_one(tmp_path: Path) -> None:
    """The worker exits when a restore fails; what the failed one merged is a subset of the
    table, so the next restore merges the rest instead of trusting a half-built index."""
    table = _FailingTable()
    for offset in range(10):
        record = BatchRecord(0, offset, offset, 10, [f"id-{offset}"], [(offset, 0)], 0, 0)
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    index = RocksDedupeIndex(tmp_path / "idx", 10**9)
    with pytest.raises(OSError):
        restore_from_table(index, table, [0])
    index.close()
    table.left = 10**6
    index = RocksDedupeIndex(tmp_path / "idx", 10**9)
    restore_from_table(index, table, [0])
    assert [index.classify(0, f"id-{o}", (99, o), 10) for o in range(10)] == ["duplicate"] * 10
    index.close()
