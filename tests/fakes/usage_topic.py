"""Reading back what an edge (ingest, proxy) put on a prefix's usage topic."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from schemas.codec import decode
from schemas.topics import USAGE
from schemas.usage import UsageBatch, UsageRecorded


async def read_usage_by_partition(
    bootstrap: str, prefix: str, expected: int, timeout_s: float = 30.0
) -> list[tuple[int, UsageRecorded]]:
    """Every (partition, event) on the usage topic from offset zero, waiting for `expected`.

    Envelopes are unpacked. After `expected` events have arrived one more poll runs, so an
    unexpected extra event (a duplicate, say) is returned too and the caller's count fails.
    """
    consumer = AIOKafkaConsumer(
        USAGE.name(prefix),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    found: list[tuple[int, UsageRecorded]] = []

    def unpack(batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp, messages in batches.items():
            for message in messages:
                event = decode(message.value or b"")
                if isinstance(event, UsageBatch):
                    found.extend((tp.partition, e) for e in event.events)
                elif isinstance(event, UsageRecorded):
                    found.append((tp.partition, event))
                else:
                    raise AssertionError(f"not usage on the usage topic: {event!r}")

    try:
        await consumer.start()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            unpack(await consumer.getmany(timeout_ms=500))
        unpack(await consumer.getmany(timeout_ms=500))
    finally:
        await consumer.stop()
    return found
