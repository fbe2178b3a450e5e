"""Which usage events the warehouse counts: the worker's dedupe rule, with the worker's window.

The worker drops a re-used event id only within its dedupe window, measured in Kafka record
time from the id's first sighting; after that the id counts again
(`streams.faust.dedupe_log.sighting`). The warehouse asks that same function, so it counts the
events the ledger counts. It never projects one position twice (its offsets commit with its
rows), so it has no redelivery to tell apart: a sighting that is not "new" is skipped.

`usage_seen` holds, per id, the record time of the sighting that counted. A row is pruned once
every usage partition has moved more than the window and `EXPIRY_SLACK_MS` past it (the
worker's expiry bound): any later sighting of that id is then "new" anyway, so pruning never
changes what is counted and the table holds about one window of ids. Rows written before the
window existed hold `UNTIMED`: still duplicates forever and never pruned, until a rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import timedelta

from sqlalchemy import Connection, text

from schemas.topics import USAGE
from streams.faust.dedupe_log import EXPIRY_SLACK_MS, Seen, sighting
from streams.ledger import Position

PRUNE_STEP_MS = 3_600_000
"""Prune when the cutoff moved an hour of record time, not on every batch."""

Sighting = tuple[str, Position, int]
"""(event id, position in its usage partition, record time in ms)."""

_KNOWN = text(
    "SELECT event_id, first_seen_ms FROM usage_seen WHERE event_id = ANY(CAST(:events AS text[]))"
)
_COUNTED = text(
    "INSERT INTO usage_seen (event_id, first_seen_ms) "
    "SELECT * FROM unnest(CAST(:events AS text[]), CAST(:times AS bigint[])) "
    "ON CONFLICT (event_id) DO UPDATE SET first_seen_ms = excluded.first_seen_ms"
)
_PRUNE = text("DELETE FROM usage_seen WHERE first_seen_ms < :cutoff")
_NOWHERE: Position = (-1, -1)
"""Stands for the stored sighting's position, which is not kept: any real position differs."""


def worker_dedupe_window() -> timedelta:
    """The worker's default window (`WorkerConfig.dedupe_window`), read from its one place."""
    from streams.faust.app import WorkerConfig  # imports Faust: only when asked for

    (window,) = (f.default for f in fields(WorkerConfig) if f.name == "dedupe_window")
    if not isinstance(window, timedelta):
        raise TypeError(f"WorkerConfig.dedupe_window defaults to {window!r}, not a timedelta")
    return window


class SeenIds:
    """Decides, batch by batch, which sightings count, and keeps `usage_seen` about one window."""

    def __init__(self, window: timedelta) -> None:
        self.window_ms = int(window.total_seconds() * 1000)
        self._latest: dict[int, int] = {}
        self._pruned_to: int | None = None

    def forget(self) -> None:
        """Drop the per-partition record times (after a reset they would run ahead)."""
        self._latest.clear()
        self._pruned_to = None

    def note(self, partition: int, time_ms: int) -> None:
        """A usage record of `partition` with record time `time_ms` is in the batch."""
        if time_ms > self._latest.get(partition, -1):
            self._latest[partition] = time_ms

    def counted(self, conn: Connection, sightings: Sequence[Sighting]) -> list[int]:
        """Indexes of the `sightings` (in position order per partition) that count; stores them."""
        ids = list({event_id for event_id, _, _ in sightings})
        held: dict[str, int] = dict(conn.execute(_KNOWN, {"events": ids}).tuples().all())
        result: list[int] = []
        changed: dict[str, int] = {}
        for i, (event_id, position, time_ms) in enumerate(sightings):
            first = held.get(event_id)
            known: Seen | None = None if first is None else (_NOWHERE, first)
            if sighting(known, position, time_ms, self.window_ms) == "new":
                held[event_id] = changed[event_id] = time_ms
                result.append(i)
        if changed:
            conn.execute(_COUNTED, {"events": list(changed), "times": list(changed.values())})
        self._prune(conn)
        return result

    def _prune(self, conn: Connection) -> None:
        if len(self._latest) < USAGE.partitions:
            return  # a partition not read yet may still hold older records
        cutoff = min(self._latest.values()) - self.window_ms - EXPIRY_SLACK_MS
        if self._pruned_to is not None and cutoff < self._pruned_to + PRUNE_STEP_MS:
            return
        conn.execute(_PRUNE, {"cutoff": cutoff})
        self._pruned_to = cutoff
