"""Dedupe state of the resolve stage: written per consumed batch, indexed per event.

One table write per usage event would cap the worker near 4,600 events/s (design.md), so the
durable form is one table key per consumed batch of one usage partition, holding the event ids
it saw first (or saw again at the same position) with their positions; a batch with more ids
than a message may carry is cut into several such records (`RecordCutter`). The lookup index
(`event_id -> first position`, per usage partition) answers `classify` for every event; the
table is its source of truth: after every recovery the index is made consistent with the
restored table (`DedupeIndex.restore`).

The window is measured in Kafka record time, per id: each id is held with the record time of
its first sighting, and a sighting more than the window after it is "new" again
(`sighting`). The answer depends only on the two record times, never on where the worker cut
its takes, so a replay answers exactly as the first run did. Expiry is clean-up: a batch
leaves the index and the table once its latest record time is more than the window and
`EXPIRY_SLACK_MS` behind the take's, when no sighting still to come can be within the window
of its ids (record times of a partition only grow, up to the slack).

Two indexes, one interface: `MemoryDedupeIndex` (a dict, rebuilt on every recovery; the
memory store's tests and small deployments) and `RocksDedupeIndex` (`dedupe_index.py`, on disk
beside the RocksDB tables, so the worker's memory does not grow with the window).

The record lives in the changelog partition of the usage partition it describes, so whichever
worker owns a usage partition restores exactly its dedupe history. Which position wins is the
domain's rule (`streams.dedupe.classify`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from streams.dedupe import Sighting, classify
from streams.ledger import Position

MAX_RECORD_IDS = 10_000
"""Ids per batch record: a take of 4,000 envelopes of 500 events is 2M ids, tens of MB in one
record, and the broker refuses a changelog message over 1 MB (MessageSizeTooLargeError), which
ended the worker and read the take again forever. A take's ids are cut into records of at most
this many ids and `MAX_RECORD_BYTES`."""

MAX_RECORD_BYTES = 600_000
"""Bound of a batch record's estimated JSON size (`_id_bytes`, an upper bound), well under the
1 MB a message may have, leaving room for the key and the batch framing."""

LEGACY_LAST_INDEX = 2**32 - 1
"""Last index of a record written before records were cut (key `p:first-last`): it covers
every index of its last offset."""

EXPIRY_SLACK_MS = 3_600_000
"""How far behind the take's latest record time, beyond the window, a batch is kept: the
broker refuses a record more than an hour in the future (CreateTime), and a usage topic with
LogAppendTime is stamped in order."""

Seen = tuple[Position, int]
"""Where and when (record time, ms) an id was first seen."""


UNTIMED = 2**62
"""The time an id is held with when its sighting came without one (`classify(..., None)`, only
callers outside the resolve stage): it is then never new again by time, only expired."""


def sighting(
    known: Seen | None, position: Position, time_ms: int | None, window_ms: int
) -> Sighting:
    """The domain's `classify`, with the window: a sighting more than `window_ms` after the
    first one is "new" again (the id left the window). Without a time, positions only."""
    if known is None or (time_ms is not None and time_ms - known[1] > window_ms):
        return "new"
    return classify(known[0], position)


def keeps(held: Seen, new: Seen, window_ms: int) -> bool:
    """Whether a restored sighting `new` replaces the `held` one: the later one when they are
    more than the window apart (the id was new again), else the lower position."""
    if new[1] - held[1] > window_ms:
        return True
    if held[1] - new[1] > window_ms:
        return False
    return new[0] < held[0]


_POSITION_BYTES = 64  # '"",' around an id, '[offset,index],' for its position, its time


def _id_bytes(event_id: str) -> int:
    """An upper bound of what one id and its position add to the record's JSON: printable
    ASCII escapes to at most 2 bytes a character (quote, backslash), anything else to at most
    6 (a control character as \\u00XX; UTF-8 needs at most 4)."""
    per_char = 2 if event_id.isascii() and event_id.isprintable() else 6
    return per_char * len(event_id) + _POSITION_BYTES


def _ids_bytes(ids: list[str]) -> int:
    """`_id_bytes` summed, without a call per id when all are printable ASCII (most are)."""
    joined = "".join(ids)
    if joined.isascii() and joined.isprintable():
        return 2 * len(joined) + _POSITION_BYTES * len(ids)
    return sum(map(_id_bytes, ids))


@dataclass
class BatchRecord:
    """What one consumed batch of one usage partition contributed to the dedupe history, or a
    cut of it (`RecordCutter`): ids in position order, from `(first_offset, first_index)` to
    `(last_offset, last_index)`. A record written before records were cut has no indexes;
    it keeps its key `p:first-last`."""

    partition: int
    first_offset: int
    last_offset: int
    record_time_ms: int
    ids: list[str] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    first_index: int | None = None
    last_index: int | None = None
    times: list[int] = field(default_factory=list)
    """Each id's record time; empty in records written before ids had one: then every id has
    `record_time_ms`, the latest of the batch."""

    def sightings(self) -> Iterator[tuple[str, Seen]]:
        times = self.times or [self.record_time_ms] * len(self.ids)
        for event_id, position, time_ms in zip(self.ids, self.positions, times, strict=True):
            yield event_id, (position, time_ms)

    @property
    def key(self) -> str:
        if self.first_index is None or self.last_index is None:
            return f"{self.partition}:{self.first_offset}-{self.last_offset}"
        return (
            f"{self.partition}:{self.first_offset}.{self.first_index}"
            f"-{self.last_offset}.{self.last_index}"
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "p": self.partition,
            "first": self.first_offset,
            "last": self.last_offset,
            "ts": self.record_time_ms,
            "ids": self.ids,
            "pos": self.positions,  # orjson writes tuples as arrays
        }
        if self.first_index is not None:
            data["fi"] = self.first_index
            data["li"] = self.last_index
        if self.times:
            data["t"] = self.times
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        first_index, last_index = data.get("fi"), data.get("li")
        return cls(
            partition=int(data["p"]),
            first_offset=int(data["first"]),
            last_offset=int(data["last"]),
            record_time_ms=int(data["ts"]),
            ids=[str(i) for i in data["ids"]],
            positions=[(int(p[0]), int(p[1])) for p in data["pos"]],
            first_index=None if first_index is None else int(first_index),
            last_index=None if last_index is None else int(last_index),
            times=[int(t) for t in data.get("t", ())],
        )


Span = tuple[int, int, int, int]
"""(first offset, first index, last offset, last index) of a batch record."""


def key_span(key: str) -> tuple[int, Span]:
    """(partition, span) of a batch record's table key, `p:o1.i1-o2.i2` or the older
    `p:o1-o2` (indexes 0 and `LEGACY_LAST_INDEX`). Spans sort in position order."""
    partition, _, span = key.partition(":")
    first, _, last = span.partition("-")
    first_offset, _, first_index = first.partition(".")
    last_offset, _, last_index = last.partition(".")
    return int(partition), (
        int(first_offset),
        int(first_index) if first_index else 0,
        int(last_offset),
        int(last_index) if last_index else LEGACY_LAST_INDEX,
    )


class RecordCutter:
    """Collects a take's kept ids per usage partition into batch records of at most
    `MAX_RECORD_IDS` ids and `MAX_RECORD_BYTES` (estimated), each with its own key."""

    def __init__(self) -> None:
        self._records: dict[int, list[BatchRecord]] = {}
        self._bytes: dict[int, int] = {}  # estimated size of each partition's last record

    def extend(
        self, partition: int, ids: list[str], positions: list[Position], timestamp_ms: int
    ) -> None:
        """Add one usage record's kept ids (in position order, after the ones added before)."""
        records = self._records.setdefault(partition, [])
        size = _ids_bytes(ids)
        current = records[-1] if records else None
        if (
            current is not None
            and len(current.ids) + len(ids) <= MAX_RECORD_IDS
            and self._bytes[partition] + size <= MAX_RECORD_BYTES
        ):  # the common case: the whole usage record fits the partition's last record
            self._append(current, ids, positions, timestamp_ms)
            self._bytes[partition] += size
            return
        for event_id, position in zip(ids, positions, strict=True):
            cost = _id_bytes(event_id)
            if (
                current is None
                or len(current.ids) >= MAX_RECORD_IDS
                or self._bytes[partition] + cost > MAX_RECORD_BYTES
            ):
                current = BatchRecord(partition, position[0], position[0], timestamp_ms,
                                      first_index=position[1])  # fmt: skip
                records.append(current)
                self._bytes[partition] = 0
            self._append(current, [event_id], [position], timestamp_ms)
            self._bytes[partition] += cost

    @staticmethod
    def _append(
        record: BatchRecord, ids: list[str], positions: list[Position], timestamp_ms: int
    ) -> None:
        record.ids.extend(ids)
        record.positions.extend(positions)
        record.times.extend([timestamp_ms] * len(ids))
        record.last_offset, record.last_index = positions[-1]
        record.record_time_ms = max(record.record_time_ms, timestamp_ms)

    def records(self) -> dict[int, list[BatchRecord]]:
        """Per usage partition, its records in position order."""
        return self._records


class DedupeTable(Protocol):
    """The restored dedupe table as `restore` reads it: its keys (streamed) and values."""

    def keys(self) -> Iterable[bytes | str]: ...

    def __getitem__(self, key: bytes) -> bytes: ...


def table_keys(table: DedupeTable, partitions: Collection[int]) -> Iterator[tuple[str, int, Span]]:
    """(key, partition, span) of each table key of the `partitions`, one at a time."""
    for raw in table.keys():  # noqa: SIM118 - a Faust table's keys() streams its store
        key = raw.decode() if isinstance(raw, bytes) else raw
        partition, span = key_span(key)
        if partition in partitions:
            yield key, partition, span


def load_record(table: DedupeTable, key: str) -> BatchRecord:
    return BatchRecord.from_dict(orjson.loads(table[key.encode()]))


class DedupeIndex(Protocol):
    """event_id -> first position, per usage partition, with expiry by record time."""

    window_ms: int

    def classify(
        self, partition: int, event_id: str, position: Position, time_ms: int | None = None
    ) -> Sighting:
        """ "new", "redelivery" or "duplicate" (`sighting`) of an id seen at `position` in a
        record of time `time_ms` (None: see `UNTIMED`); a new event counts as seen at once, so
        a second copy later in the same batch is already a duplicate."""
        ...

    def add(self, record: BatchRecord) -> None:
        """Keep the batch record written for this batch (its ids were classified)."""
        ...

    def expire(self, partition: int, now_ms: int) -> list[str]: ...

    def restore(self, table: DedupeTable, partitions: Collection[int]) -> None:
        """Agree with the restored table for the owned `partitions`; a partition not in them
        is no longer owned and is dropped."""
        ...

    def size(self) -> int:
        """How many ids the index holds (an estimate for an index on disk)."""
        ...

    def close(self) -> None: ...


@dataclass
class _PartitionIndex:
    first_seen: dict[str, Seen] = field(default_factory=dict)
    records: deque[BatchRecord] = field(default_factory=deque)


class MemoryDedupeIndex:
    """`DedupeIndex` in a dict: about 250 bytes per id held, rebuilt on every recovery."""

    def __init__(self, window_ms: int, slack_ms: int = EXPIRY_SLACK_MS) -> None:
        self.window_ms = window_ms
        self.slack_ms = slack_ms
        self._partitions: dict[int, _PartitionIndex] = {}

    def reset(self, records: list[BatchRecord]) -> None:
        """Rebuild from the stored batch records (after a recovery or a rebalance)."""
        self._partitions = {}
        for record in sorted(records, key=lambda r: key_span(r.key)):
            self._load(record)

    def restore(self, table: DedupeTable, partitions: Collection[int]) -> None:
        self.reset([load_record(table, key) for key, _, _ in table_keys(table, partitions)])

    def _load(self, record: BatchRecord) -> None:
        index = self._partitions.setdefault(record.partition, _PartitionIndex())
        index.records.append(record)
        for event_id, seen in record.sightings():
            known = index.first_seen.get(event_id)
            if known is None or keeps(known, seen, self.window_ms):
                index.first_seen[event_id] = seen

    def classify(
        self, partition: int, event_id: str, position: Position, time_ms: int | None = None
    ) -> Sighting:
        index = self._partitions.get(partition)
        if index is None:
            index = self._partitions[partition] = _PartitionIndex()
        known = index.first_seen.get(event_id)
        if known is None:  # "new", without the call: most events are
            index.first_seen[event_id] = (position, UNTIMED if time_ms is None else time_ms)
            return "new"
        kind = sighting(known, position, time_ms, self.window_ms)
        if kind == "new":
            index.first_seen[event_id] = (position, UNTIMED if time_ms is None else time_ms)
        return kind

    def add(self, record: BatchRecord) -> None:
        self._partitions.setdefault(record.partition, _PartitionIndex()).records.append(record)

    def expire(self, partition: int, now_ms: int) -> list[str]:
        index = self._partitions.get(partition)
        if index is None:
            return []
        expired = []
        horizon = now_ms - self.window_ms - self.slack_ms
        while index.records and index.records[0].record_time_ms < horizon:
            record = index.records.popleft()
            expired.append(record.key)
            for event_id, position in zip(record.ids, record.positions, strict=True):
                known = index.first_seen.get(event_id)
                if known is not None and known[0] == position:
                    del index.first_seen[event_id]
        return expired

    def size(self) -> int:
        return sum(len(p.first_seen) for p in self._partitions.values())

    def close(self) -> None:
        self._partitions = {}
