"""Dedupe state of the resolve stage: written per consumed batch, indexed per event.

One table write per usage event would cap the worker near 4,600 events/s (design.md), so the
durable form is one table key per consumed batch of one usage partition, holding the event ids
it saw first (or saw again at the same position) with their positions. The lookup index
(`event_id -> first position`, per usage partition) answers `classify` for every event; the
table is its source of truth: after every recovery the index is made consistent with the
restored table (`DedupeIndex.restore`). Both expire after the dedupe window, measured in Kafka
record time so that a replay expires exactly as the first run did.

Two indexes, one interface: `MemoryDedupeIndex` (a dict, rebuilt on every recovery; the
memory store's tests and small deployments) and `RocksDedupeIndex` (`dedupe_index.py`, on disk
beside the RocksDB tables, so the worker's memory does not grow with the window).

The record lives in the changelog partition of the usage partition it describes, so whichever
worker owns a usage partition restores exactly its dedupe history. Which position wins is the
domain's rule (`streams.dedupe.classify`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.dedupe import Sighting, classify
from streams.ledger import Position


@dataclass
class BatchRecord:
    """What one consumed batch of one usage partition contributed to the dedupe history."""

    partition: int
    first_offset: int
    last_offset: int
    record_time_ms: int
    ids: list[str] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.partition}:{self.first_offset}-{self.last_offset}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "p": self.partition,
            "first": self.first_offset,
            "last": self.last_offset,
            "ts": self.record_time_ms,
            "ids": self.ids,
            "pos": self.positions,  # orjson writes tuples as arrays
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        return cls(
            partition=int(data["p"]),
            first_offset=int(data["first"]),
            last_offset=int(data["last"]),
            record_time_ms=int(data["ts"]),
            ids=[str(i) for i in data["ids"]],
            positions=[(int(p[0]), int(p[1])) for p in data["pos"]],
        )


def key_offsets(key: str) -> tuple[int, int, int]:
    """(partition, first offset, last offset) of a batch record's table key."""
    partition, _, span = key.partition(":")
    first, _, last = span.partition("-")
    return int(partition), int(first), int(last)


def keys_by_partition(
    keys: Iterable[bytes | str], partitions: Iterable[int]
) -> dict[int, list[str]]:
    """The table's batch keys grouped by usage partition; every partition in `partitions`
    (the assigned ones) is present, also when it has no key yet."""
    grouped: dict[int, list[str]] = {p: [] for p in partitions}
    for raw in keys:
        key = raw.decode() if isinstance(raw, bytes) else raw
        grouped.setdefault(key_offsets(key)[0], []).append(key)
    return grouped


LoadRecord = Callable[[str], BatchRecord]
"""Reads one batch record of the restored table by its key."""


class DedupeIndex(Protocol):
    """event_id -> first position, per usage partition, with expiry by record time."""

    window_ms: int

    def classify(self, partition: int, event_id: str, position: Position) -> Sighting:
        """ "new", "redelivery" or "duplicate"; a new event counts as seen at once, so a second
        copy later in the same batch is already a duplicate."""
        ...

    def add(self, record: BatchRecord) -> None:
        """Keep the batch record written for this batch (its ids were classified)."""
        ...

    def expire(self, partition: int, now_ms: int) -> list[str]: ...

    def restore(self, stored: Mapping[int, Collection[str]], load: LoadRecord) -> None:
        """Agree with the restored table: `stored` holds its batch keys per owned partition;
        a partition not in it is no longer owned and is dropped."""
        ...

    def size(self) -> int:
        """How many ids the index holds (an estimate for an index on disk)."""
        ...

    def close(self) -> None: ...


@dataclass
class _PartitionIndex:
    first_seen: dict[str, Position] = field(default_factory=dict)
    records: deque[BatchRecord] = field(default_factory=deque)


class MemoryDedupeIndex:
    """`DedupeIndex` in a dict: about 250 bytes per id held, rebuilt on every recovery."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._partitions: dict[int, _PartitionIndex] = {}

    def reset(self, records: list[BatchRecord]) -> None:
        """Rebuild from the stored batch records (after a recovery or a rebalance)."""
        self._partitions = {}
        for record in sorted(records, key=lambda r: (r.partition, r.first_offset, r.last_offset)):
            self._load(record)

    def restore(self, stored: Mapping[int, Collection[str]], load: LoadRecord) -> None:
        self.reset([load(key) for keys in stored.values() for key in keys])

    def _load(self, record: BatchRecord) -> None:
        index = self._partitions.setdefault(record.partition, _PartitionIndex())
        index.records.append(record)
        for event_id, position in zip(record.ids, record.positions, strict=True):
            known = index.first_seen.get(event_id)
            if known is None or position < known:
                index.first_seen[event_id] = position

    def classify(self, partition: int, event_id: str, position: Position) -> Sighting:
        index = self._partitions.get(partition)
        if index is None:
            index = self._partitions[partition] = _PartitionIndex()
        known = index.first_seen.get(event_id)
        if known is None:  # the domain's "new", without the call: most events are
            index.first_seen[event_id] = position
            return "new"
        return classify(known, position)

    def add(self, record: BatchRecord) -> None:
        self._partitions.setdefault(record.partition, _PartitionIndex()).records.append(record)

    def expire(self, partition: int, now_ms: int) -> list[str]:
        index = self._partitions.get(partition)
        if index is None:
            return []
        expired = []
        horizon = now_ms - self.window_ms
        while index.records and index.records[0].record_time_ms < horizon:
            record = index.records.popleft()
            expired.append(record.key)
            for event_id, position in zip(record.ids, record.positions, strict=True):
                if index.first_seen.get(event_id) == position:
                    del index.first_seen[event_id]
        return expired

    def size(self) -> int:
        return sum(len(p.first_seen) for p in self._partitions.values())

    def close(self) -> None:
        self._partitions = {}
