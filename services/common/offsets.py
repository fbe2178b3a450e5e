"""Consumed offsets kept in PostgreSQL, in the same transaction as the rows they produced.

Every projection (the warehouse read models, the alerts outbox) resumes from here after a crash,
so a batch is either fully applied with its offsets or not at all (design.md: "Projections
write idempotently ... with the consumed offsets stored in the same transaction"). Offsets only
move forward: a late writer holding an older batch cannot rewind a consumer. To start again
from zero, delete the consumer's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, text

_LOAD = text(
    "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer = :consumer"
)
_LOAD_TOPICS = text(
    "SELECT topic, partition, next_offset FROM consumer_offsets "
    "WHERE consumer = :consumer AND topic = ANY(:topics)"
)
_STORE = text(
    "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset) "
    "VALUES (:consumer, :topic, :partition, :next_offset) "
    "ON CONFLICT (consumer, topic, partition) DO UPDATE "
    "SET next_offset = GREATEST(consumer_offsets.next_offset, EXCLUDED.next_offset)"
)


def load_offsets(
    conn: Connection, consumer: str, topics: Iterable[str] | None = None
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the next offset to read, for `consumer` (limited to `topics`)."""
    if topics is None:
        rows = conn.execute(_LOAD, {"consumer": consumer})
    else:
        rows = conn.execute(_LOAD_TOPICS, {"consumer": consumer, "topics": list(topics)})
    return {(r.topic, r.partition): r.next_offset for r in rows}


def store_offsets(conn: Connection, consumer: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Record the next offsets to read; a lower offset than the stored one is ignored."""
    if not offsets:
        return
    conn.execute(
        _STORE,
        [
            {"consumer": consumer, "topic": topic, "partition": partition, "next_offset": n}
            for (topic, partition), n in offsets.items()
        ],
    )
