"""A usage event makes a round trip through the real broker, serialized by the contract."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import decode, encode
from schemas.topics import USAGE
from schemas.usage import UsageRecorded


async def test_usage_event_round_trips_through_kafka(kafka_bootstrap: str, topic_prefix: str):
    event = UsageRecorded(
        source="smoke",
        source_request_id="req-1",
        occurred_at=datetime(2026, 11, 17, 9, 30, tzinfo=UTC),
        received_at=datetime(2026, 11, 17, 9, 30, 1, tzinfo=UTC),
        tenant="acme",
        team="support",
        tags=["copilot"],
        provider="openai",
        request_model="gpt-4o",
        input_uncached=1200,
        cache_read=300,
        output=450,
        reasoning=100,
    )
    topic = USAGE.name(topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, encode(event), key=event.event_id.encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()

    assert record.key == event.event_id.encode()
    assert decode(record.value) == event
