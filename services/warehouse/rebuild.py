"""Empty the read models and project the topics again from offset zero.

Projections are pure functions of the topics, so a rebuild gives the same rows as the live run:
usage is matched against the budget revisions in force at its record time (`history.py`), the
dedupe window runs on record time (`seen.py`), and every row's timestamps come from events or
records, never from the clock. Config is read before usage, so every revision is known first.
The rebuild holds the projection's lock: it refuses to run while `allotment warehouse` or
`allotment api --projection` projects the same topics into the same database.
The projected tables hold one deployment (topic prefix) per database: a rebuild empties them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from services.warehouse.consumer import Progress, WarehouseConsumer


async def rebuild(
    engine: Engine,
    bootstrap: str,
    prefix: str,
    on_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    dedupe_window: timedelta | None = None,
) -> int:
    """Reset, then project from offset zero to the current ends; returns records projected."""
    consumer = WarehouseConsumer(engine, bootstrap, prefix, dedupe_window=dedupe_window)
    await consumer.start()
    try:
        await consumer.reset()
        if on_total is not None:
            on_total(await consumer.backlog())
        return await consumer.catch_up(progress)
    finally:
        await consumer.stop()
