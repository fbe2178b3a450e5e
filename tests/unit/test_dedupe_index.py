"""The on-disk dedupe index: same answers as the dict, across restarts, expiry and rebalances.

A "table" here is a dict of batch key -> record bytes, as the worker's dedupe table holds them;
`restore` is given its keys exactly as the worker gives them after a recovery.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.faust.dedupe_index import RocksDedupeIndex, restore_from_table
from streams.faust.dedupe_log import BatchRecord, DedupeIndex, MemoryDedupeIndex

WINDOW = 1_000


class Table(dict[bytes, bytes]):
    """The dedupe table of one worker, as bytes."""

    def write(self, record: BatchRecord) -> None:
        self[record.key.encode()] = orjson.dumps(record.to_dict())

    def expire(self, keys: list[str]) -> None:
        for key in keys:
            self.pop(key.encode(), None)


def _batch(
    index: DedupeIndex,
    table: Table,
    partition: int,
    offset: int,
    ids: list[str],
    at: int,
    cut: bool = False,
) -> list[str]:
    """One consumed message of `ids` at `offset`, as resolve handles it; returns the
    classification of each id. `cut`: keyed by position (`p:o.i-o.i`) as records are now,
    else by offsets only, as records written before they were cut."""
    kinds = [index.classify(partition, event_id, (offset, i), at) for i, event_id in enumerate(ids)]
    kept = [(e, (offset, i)) for i, (e, k) in enumerate(zip(ids, kinds, strict=True))
            if k != "duplicate"]  # fmt: skip
    if kept:
        record = BatchRecord(partition, offset, offset, at, [e for e, _ in kept],
                             [p for _, p in kept])  # fmt: skip
        if cut:
            record.first_index, record.last_index = kept[0][1][1], kept[-1][1][1]
        index.add(record)
        table.write(record)
        table.expire(index.expire(partition, at))
    return kinds


def _open(path: Path) -> RocksDedupeIndex:
    return RocksDedupeIndex(path, WINDOW, block_cache=1 << 20, write_buffer=1 << 20, slack_ms=0)


def test_duplicates_across_batches_and_a_restart_are_dropped(tmp_path: Path) -> None:
    table = Table()
    index = _open(tmp_path / "idx")
    restore_from_table(index, table, [0])
    assert _batch(index, table, 0, 0, ["a", "b", "a"], 10) == ["new", "new", "duplicate"]
    assert _batch(index, table, 0, 1, ["b", "c"], 20) == ["duplicate", "new"]
    index.close()

    again = _open(tmp_path / "idx")
    restore_from_table(again, table, [0])
    assert again.rebuilds == 0  # the index held exactly the table's batches: kept as it was
    assert _batch(again, table, 0, 2, ["a", "c", "d"], 30) == ["duplicate", "duplicate", "new"]
    # Kafka redelivers offset 0 (the commit was lost): same position, emitted again.
    assert _batch(again, table, 0, 0, ["a", "b", "a"], 10) == ["redelivery", "redelivery",
                                                             "duplicate"]  # fmt: skip
    again.close()


def test_expiry_removes_ids_and_their_batches_also_after_a_restart(tmp_path: Path) -> None:
    table = Table()
    index = _open(tmp_path / "idx")
    _batch(index, table, 0, 0, ["old"], 100)
    _batch(index, table, 0, 1, ["kept"], 900)
    index.close()
    index = _open(tmp_path / "idx")
    restore_from_table(index, table, [0])
    assert index.expire(0, 1_050) == []
    assert index.expire(0, 1_101) == ["0:0-0"]
    assert index.classify(0, "old", (5, 0), 1_101) == "new"
    assert index.classify(0, "kept", (5, 1), 1_101) == "duplicate"
    # An id seen first in a batch that has not expired keeps that batch's position.
    assert index.expire(0, 1_901) == ["0:1-1"]
    assert index.classify(0, "kept", (6, 0), 1_901) == "new"
    index.close()


def test_a_partition_back_after_another_owner_gets_that_owners_batches(tmp_path: Path) -> None:
    table = Table()  # the changelog: both workers' writes end up in it
    mine = _open(tmp_path / "mine")
    restore_from_table(mine, table, [0, 1])
    _batch(mine, table, 1, 0, ["x"], 10)
    restore_from_table(mine, table, [0])  # partition 1 revoked: its database is closed

    other = _open(tmp_path / "other")
    restore_from_table(other, table, [1])
    assert _batch(other, table, 1, 1, ["x", "y"], 20) == ["duplicate", "new"]
    other.close()

    restore_from_table(mine, table, [0, 1])  # reassigned: merges the other owner's batch
    assert mine.rebuilds == 0
    assert _batch(mine, table, 1, 2, ["x", "y", "z"], 30) == ["duplicate", "duplicate", "new"]
    mine.close()


def test_an_index_ahead_of_its_table_is_rebuilt_from_the_table(tmp_path: Path) -> None:
    """A crash between the index write and the table write, or a batch another owner expired:
    the table is the truth, and ids of a batch it does not hold are forgotten."""
    table = Table()
    index = _open(tmp_path / "idx")
    _batch(index, table, 0, 0, ["a"], 10)
    index.classify(0, "lost", (1, 0), 20)
    index.add(BatchRecord(0, 1, 1, 20, ["lost"], [(1, 0)]))  # never reached the table
    index.close()

    index = _open(tmp_path / "idx")
    restore_from_table(index, table, [0])
    assert index.rebuilds == 1
    assert index.classify(0, "a", (2, 0), 30) == "duplicate"
    assert index.classify(0, "lost", (2, 1), 30) == "new"
    index.close()


def test_a_merged_record_keeps_the_lower_position(tmp_path: Path) -> None:
    table = Table()
    index = _open(tmp_path / "idx")
    _batch(index, table, 0, 5, ["x"], 10)
    table.write(BatchRecord(0, 1, 1, 10, ["x"], [(1, 0)]))  # another owner saw it first
    table.write(BatchRecord(0, 9, 9, 10, ["x"], [(9, 0)]))  # and a later copy (never kept)
    restore_from_table(index, table, [0])
    assert index.classify(0, "x", (1, 0), 10) == "redelivery"
    assert index.classify(0, "x", (5, 0), 10) == "duplicate"
    index.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 1),  # partition
            st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=5),  # ids
            st.integers(-300, 400),  # record time step (producers' clocks are not in order)
            st.booleans(),  # restart after this batch
            st.booleans(),  # a record keyed by position (else an older, offsets-only key)
        ),
        max_size=25,
    )
)
def test_the_rocksdb_index_answers_as_the_dict_does(
    tmp_path_factory: object, steps: list[tuple[int, list[str], int, bool, bool]]
) -> None:
    path = tmp_path_factory.mktemp("idx")  # type: ignore[attr-defined]
    memory, rocks = MemoryDedupeIndex(WINDOW, slack_ms=0), _open(path)
    memory_table, rocks_table = Table(), Table()
    offsets = {0: 0, 1: 0}
    at = 0
    for partition, ids, step, restart, cut in steps:
        at += step
        offset = offsets[partition]
        offsets[partition] += 1
        expected = _batch(memory, memory_table, partition, offset, ids, at, cut)
        assert _batch(rocks, rocks_table, partition, offset, ids, at, cut) == expected
        assert rocks_table == memory_table
        if restart:
            rocks.close()
            rocks = _open(path)
            restore_from_table(rocks, rocks_table, [0, 1])
            restore_from_table(memory, memory_table, [0, 1])
    rocks.close()
