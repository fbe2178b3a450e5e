"""Whether an id left the dedupe window depends on record times only, not on take boundaries.

The window used to be applied by expiry, with each take's latest record time as "now": a copy
near the window's edge was a duplicate when the worker read in small takes (live) and new when
it read the same records in big ones (a replay), or the other way round. Each id is now held
with its first sighting's record time and a copy is new only more than the window after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.budgets import BudgetIndex
from streams.faust.dedupe_index import RocksDedupeIndex, restore_from_table
from streams.faust.dedupe_log import BatchRecord, DedupeIndex, MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord
from streams.ledger import Position

WINDOW = 100


class Recording:
    """An index that notes every answer it gives."""

    def __init__(self, index: DedupeIndex) -> None:
        self.index = index
        self.answers: list[str] = []

    def classify(self, partition: int, event_id: str, position: Position, time_ms: int) -> str:
        answer = self.index.classify(partition, event_id, position, time_ms)
        self.answers.append(answer)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)


def _records(messages: list[tuple[list[str], int]]) -> list[UsageRecord]:
    """One envelope per message, at increasing offsets and record times (LogAppendTime)."""
    out, at = [], 0
    for offset, (ids, step) in enumerate(messages):
        at += step
        events = [{
            "type": "UsageRecorded", "version": 1, "event_id": i, "source": "t",
            "occurred_at": "2026-11-20T09:00:00+00:00",
            "received_at": "2026-11-20T09:00:00+00:00", "tenant": "acme",
            "input_uncached": 1, "output": 1,
        } for i in ids]  # fmt: skip
        value = orjson.dumps({"type": "UsageBatch", "version": 1, "events": events})
        out.append(UsageRecord(0, offset, at, value))
    return out


def _answers(
    index: DedupeIndex,
    records: list[UsageRecord],
    cuts: list[int],
    reopen: Callable[[DedupeIndex, dict[bytes, bytes]], DedupeIndex] | None = None,
) -> list[str]:
    """Resolve `records` in takes ending at `cuts`, as the agent does (table, then index);
    `reopen` (a restart) after each take."""
    recording = Recording(index)
    resolver = Resolver("p.usage", 1, recording, BudgetIndex)  # type: ignore[arg-type]
    table: dict[bytes, bytes] = {}
    start = 0
    for end in [*sorted(set(cuts)), len(records)]:
        if end <= start:
            continue
        out = resolver.resolve(records[start:end])
        assert not out.rejected
        for record in out.records:
            table[record.key.encode()] = orjson.dumps(record.to_dict())
        for key in itertools.chain.from_iterable(resolver.keep(out).values()):
            table.pop(key.encode(), None)
        start = end
        if reopen is not None:
            recording.index = reopen(recording.index, table)
    return recording.answers


MESSAGES = st.lists(
    st.tuples(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3), st.integers(0, 60)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(MESSAGES, st.lists(st.integers(0, 30), max_size=6), st.sampled_from([0, 50]))
def test_answers_do_not_depend_on_where_takes_are_cut(
    messages: list[tuple[list[str], int]], cuts: list[int], slack: int
) -> None:
    records = _records(messages)
    one_by_one = _answers(MemoryDedupeIndex(WINDOW, slack), records, list(range(len(records))))
    assert _answers(MemoryDedupeIndex(WINDOW, slack), records, cuts) == one_by_one
    assert _answers(MemoryDedupeIndex(WINDOW, slack), records, []) == one_by_one


@settings(max_examples=25, deadline=None)
@given(MESSAGES, st.lists(st.integers(0, 30), max_size=6))
def test_the_rocksdb_index_restarted_after_every_take_answers_as_the_dict(
    tmp_path_factory: Any, messages: list[tuple[list[str], int]], cuts: list[int]
) -> None:
    records = _records(messages)
    path = tmp_path_factory.mktemp("idx")
    expected = _answers(MemoryDedupeIndex(WINDOW, 0), records, cuts)

    def reopen(index: DedupeIndex, table: dict[bytes, bytes]) -> DedupeIndex:
        index.close()
        again = RocksDedupeIndex(path, WINDOW, slack_ms=0)
        restore_from_table(again, table, [0])
        return again

    rocks = RocksDedupeIndex(path, WINDOW, slack_ms=0)
    assert _answers(rocks, records, cuts, reopen) == expected


def test_a_copy_just_inside_the_window_is_a_duplicate_just_outside_new() -> None:
    records = _records([(["x"], 0), (["x"], WINDOW), (["x"], 1)])
    assert _answers(MemoryDedupeIndex(WINDOW, 0), records, []) == ["new", "duplicate", "new"]


def test_after_a_restore_an_id_keeps_its_first_sightings_time(tmp_path: Path) -> None:
    """Restored from the table (the record's per-id times), the index answers as before."""
    record = BatchRecord(0, 1, 2, 60, ["early", "late"], [(1, 0), (2, 0)], 0, 0, [0, 60])
    table = {record.key.encode(): orjson.dumps(record.to_dict())}
    for index in (MemoryDedupeIndex(WINDOW, 0), RocksDedupeIndex(tmp_path / "idx", WINDOW)):
        restore_from_table(index, table, [0])
        assert index.classify(0, "early", (3, 0), 101) == "new"
        assert index.classify(0, "late", (3, 1), 101) == "duplicate"
        index.close()
