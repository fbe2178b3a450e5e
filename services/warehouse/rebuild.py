"""Drop the read models and project the topics again from offset zero.

Projections are pure functions of the topics, so a rebuild gives the same rows as the live run
(config events are replayed before usage in every batch, and every row's timestamps come from
events, never from the clock). Stop the live warehouse consumer first: it would keep writing
from its own position while the tables are emptied.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, delete, text

from services.warehouse import tables as t
from services.warehouse.consumer import CONSUMER, Progress, WarehouseConsumer


def reset(engine: Engine, name: str = CONSUMER) -> None:
    """Empty every projected table and forget the consumer's offsets, in one transaction."""
    names = ", ".join(table.name for table in t.PROJECTED)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names}"))
        conn.execute(delete(t.consumer_offsets).where(t.consumer_offsets.c.consumer == name))


async def rebuild(
    engine: Engine,
    bootstrap: str,
    prefix: str,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
) -> int:
    """Reset, then project from offset zero to the current ends; returns records projected."""
    reset(engine)
    consumer = WarehouseConsumer(engine, bootstrap, prefix)
    await consumer.start()
    try:
        if on_total is not None:
            on_total(await consumer.backlog())
        return await consumer.catch_up(progress)
    finally:
        await consumer.stop()
