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
from datetime import timedelta

from sqlalchemy import Connection, text

from schemas.topics import USAGE
from streams.faust.dedupe_log import EXPIRY_SLACK_MS, Seen, sighting
from streams.ledger import Position

PRUNE_STEP_MS = 3_600_000
"""Prune when the cutoff moved an hour of record time, not on every batch."""

Sighting = tuple[str, Position, int]
"""(event id, position in its usage partition, record time in ms)."""

_FIRST = text(
    "INSERT INTO usage_seen (event_id, first_seen_ms) "
    "SELECT * FROM unnest(CAST(:events AS text[]), CAST(:times AS bigint[])) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
_KNOWN = text(
    "SELECT event_id, first_seen_ms FROM usage_seen WHERE event_id = ANY(CAST(:events AS text[]))"
)
_RECOUNTED = text(
    "UPDATE usage_seen SET first_seen_ms = u.time "
    "FROM unnest(CAST(:events AS text[]), CAST(:times AS bigint[])) AS u(event_id, time) "
    "WHERE usage_seen.event_id = u.event_id"
)
_PRUNE = text("DELETE FROM usage_seen WHERE first_seen_ms < :cutoff")
_NOWHERE: Position = (-1, -1)
"""Stands for the stored sighting's position, which is not kept: any real position differs."""


def worker_dedupe_window() -> timedelta:
    """The window the worker runs with when no flag says otherwise: ALLOTMENT_DEDUPE_WINDOW_HOURS,
    else `WorkerConfig.dedupe_window` (`streams.faust.cli.dedupe_window`, its one place)."""
    from streams.faust.cli import dedupe_window  # imports Faust: only when asked for

    return dedupe_window()


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
        """Indexes of the `sightings` (in position order per partition) that count; stores them.

        One statement in the common case: each id is inserted with its first time in the batch,
        and only the ids already held (copies, or ids back after the window) are read and, if
        they count again, updated. Arrays keep it one parameter each whatever the batch size.
        """
        first: dict[str, int] = {}
        for event_id, _, time_ms in sightings:
            first.setdefault(event_id, time_ms)
        inserted = set(
            conn.execute(_FIRST, {"events": list(first), "times": list(first.values())}).scalars()
        )
        others = [event_id for event_id in first if event_id not in inserted]
        held: dict[str, int] = {}
        if others:
            held = dict(conn.execute(_KNOWN, {"events": others}).tuples().all())
        stored = {**held, **{event_id: first[event_id] for event_id in inserted}}
        result: list[int] = []
        for i, (event_id, position, time_ms) in enumerate(sightings):
            at = held.get(event_id)
            known: Seen | None = None if at is None else (_NOWHERE, at)
            if sighting(known, position, time_ms, self.window_ms) == "new":
                held[event_id] = time_ms
                result.append(i)
        again = {event_id: at for event_id, at in held.items() if stored[event_id] != at}
        if again:
            conn.execute(_RECOUNTED, {"events": list(again), "times": list(again.values())})
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
