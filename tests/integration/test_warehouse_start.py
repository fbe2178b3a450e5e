"""A projection whose start fails gives its lock back, so the next start is not refused."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError

from services.common.db import make_engine
from services.warehouse.consumer import WarehouseConsumer


async def test_a_start_against_a_dead_broker_releases_the_projection_lock(
    database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    engine = make_engine(database_url)
    try:
        doomed = WarehouseConsumer(engine, "127.0.0.1:1", topic_prefix)
        with pytest.raises(KafkaConnectionError):
            await doomed.start()

        healthy = WarehouseConsumer(engine, kafka_bootstrap, topic_prefix)
        await healthy.start()  # ProjectionBusy here if the failed start kept the lock
        await healthy.stop()
    finally:
        engine.dispose()
