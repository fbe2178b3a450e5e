"""Test traffic on the real broker: events put on a topic, usage read back from one, a topic's
config read back once the broker shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.base import Event
from schemas.codec import decode, encode
from schemas.topics import USAGE
from schemas.usage import UsageBatch, UsageRecorded


async def send_events(bootstrap: str, records: Iterable[tuple[str, str, Event]]) -> None:
    """Put each (topic, key, event) on the broker in order, each acknowledged (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        for topic, key, event in records:
            await producer.send_and_wait(topic, encode(event), key=key.encode())
    finally:
        await producer.stop()


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


async def topic_config(bootstrap: str, topic: str, timeout: float = 20.0) -> dict[str, str]:
    """The topic's config, once the broker describes it (a new topic may take a moment)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            error_code, message, _, _, entries = response.resources[0]
            if not error_code:
                return {e[0]: e[1] for e in entries}
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{topic}: describe failed: {error_code} {message}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def config_when(
    bootstrap: str, topic: str, key: str, value: str, timeout: float = 20.0
) -> dict[str, str]:
    """The topic's config once `key` reads `value`: the broker answers an alter before its own
    metadata shows the change, so a describe (or a produce) right after may see the old one."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (config := await topic_config(bootstrap, topic)).get(key) != value:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{topic}: {key} is {config.get(key)!r}, not {value!r}")
        await asyncio.sleep(0.1)
    return config
