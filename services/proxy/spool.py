"""A durable local queue of encoded usage events, between the request path and Kafka.

Every usage event the proxy records is appended here first and deleted only after Kafka
acknowledged it (acks=all). While the broker is unreachable events simply accumulate; when it
returns they are sent in order. A restart reopens the same file and sends what is left, so an
outage or a proxy restart loses nothing that reached the spool. SQLite in WAL mode gives
atomic batch appends and crash safety without a server; it is called from a worker thread so the
event loop never blocks on the disk.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool"
    " (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, event BLOB NOT NULL)"
)
_SET_ASIDE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS set_aside (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL,"
    " event BLOB NOT NULL, reason TEXT NOT NULL)"
)


class Spool:
    """Append-only, delete-after-ack. Thread-safe: one connection behind a lock."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "usage-spool.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._db.execute(_SET_ASIDE_SCHEMA)

    def append(self, events: list[tuple[str, bytes]]) -> None:
        """Store a batch of (event_id, encoded event) atomically: all of it or none of it."""
        if not events:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO spool (event_id, event) VALUES (?, ?)", events)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def peek(self, limit: int) -> list[tuple[int, str, bytes]]:
        """The oldest `limit` events not yet acknowledged: (row id, event_id, encoded event)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, event_id, event FROM spool ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [(int(row[0]), str(row[1]), bytes(row[2])) for row in rows]

    def ack(self, up_to_id: int, keep: Sequence[int] = ()) -> None:
        """Kafka has the events up to this id, except the rows in `keep`: drop them."""
        marks = ",".join("?" * len(keep))
        with self._lock:
            self._db.execute(
                f"DELETE FROM spool WHERE id <= ? AND id NOT IN ({marks})", (up_to_id, *keep)
            )

    def set_aside(self, ids: list[int], reason: str) -> None:
        """Move rows Kafka can never take (an event too large for the usage topic, a row that is
        not a usage event) out of the queue, so the events behind them are sent. They stay in
        this file's `set_aside` table with the reason: kept for an operator, never silently
        dropped."""
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO set_aside (id, event_id, event, reason)"
                    f" SELECT id, event_id, event, ? FROM spool WHERE id IN ({marks})",
                    (reason, *ids),
                )
                self._db.execute(f"DELETE FROM spool WHERE id IN ({marks})", ids)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def set_aside_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
