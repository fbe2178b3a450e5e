"""A row makes a round trip through SQLAlchemy and psycopg on the migrated database."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

INSERT = text(
    "INSERT INTO consumer_offsets (consumer, topic, partition, next_offset)"
    " VALUES (:consumer, :topic, :partition, :next_offset)"
    " ON CONFLICT (consumer, topic, partition) DO NOTHING"
)


def test_offset_row_round_trips_and_is_written_once(engine: Engine):
    consumer = f"smoke-{uuid.uuid4().hex[:8]}"
    row = {"consumer": consumer, "topic": "allotment.usage", "partition": 3, "next_offset": 42}
    with engine.begin() as conn:
        first = conn.execute(INSERT, row).rowcount
        second = conn.execute(INSERT, {**row, "next_offset": 99}).rowcount

    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT topic, partition, next_offset FROM consumer_offsets"
                " WHERE consumer = :consumer"
            ),
            {"consumer": consumer},
        ).all()

    assert (first, second) == (1, 0)
    assert [tuple(r) for r in stored] == [("allotment.usage", 3, 42)]
