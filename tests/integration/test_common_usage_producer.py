"""`UsageProducer.start()` fails cleanly: nothing of the Kafka client outlives the error."""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiokafka.errors import KafkaConnectionError

from services.common.usage_producer import UsageProducer


def _complaints() -> list[str]:
    found: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: found.append(str(context.get("message")))
    )
    return found


async def test_a_broker_that_is_down_fails_without_leaking_the_producer() -> None:
    complaints = _complaints()
    producer = UsageProducer("127.0.0.1:1", "nowhere")
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    del producer
    gc.collect()
    assert not [c for c in complaints if "Unclosed" in c], complaints
