"""`read_from_start`: every value of a topic, all partitions, from offset zero to the end."""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from schemas.topics import BUDGET_EVENTS
from services.common.kafka import TopicReadStalled, read_from_start


async def test_every_value_of_every_partition_is_read_once(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = BUDGET_EVENTS.name(topic_prefix)
    sent = {f"v{i}".encode() for i in range(40)}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(sorted(sent)):
            await producer.send_and_wait(topic, value, partition=i % BUDGET_EVENTS.partitions)
    finally:
        await producer.stop()

    seen: list[bytes | None] = []
    await read_from_start(kafka_bootstrap, topic, BUDGET_EVENTS.partitions, seen.append)

    assert len(seen) == len(sent)
    assert set(seen) == sent


async def test_an_empty_topic_reads_nothing(kafka_bootstrap: str, topic_prefix: str) -> None:
    seen: list[bytes | None] = []
    topic = BUDGET_EVENTS.name(topic_prefix)
    await read_from_start(kafka_bootstrap, topic, BUDGET_EVENTS.partitions, seen.append)
    assert seen == []


async def test_a_broker_that_is_down_fails_without_leaking_the_consumer() -> None:
    complaints: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: complaints.append(str(context.get("message")))
    )
    with pytest.raises(KafkaConnectionError):
        await read_from_start("127.0.0.1:1", "nowhere", 1, lambda _value: None)

    gc.collect()
    assert not [c for c in complaints if "Unclosed" in c]


async def test_a_read_that_stops_moving_raises_instead_of_returning_a_partial_fold(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = BUDGET_EVENTS.name(topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value in (b"a", b"b", b"c"):
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()

    async def silent(self: AIOKafkaConsumer, *partitions: object, **options: object) -> dict:
        await asyncio.sleep(0.01)  # a broker that stopped answering fetches
        return {}

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", silent)
    seen: list[bytes | None] = []
    with pytest.raises(TopicReadStalled) as stalled:
        await read_from_start(
            kafka_bootstrap, topic, BUDGET_EVENTS.partitions, seen.append, stall_polls=3
        )
    assert (stalled.value.topic, stalled.value.behind) == (topic, 3)
    assert isinstance(stalled.value, TimeoutError)  # the API's "try later" path catches it
    assert seen == []
