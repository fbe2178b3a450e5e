"""The one way Allotment's own edges (ingest, proxy) put usage on Kafka: packed envelopes.

One Kafka message per usage event caps a Faust worker near 10,000 messages/s (design.md,
"Throughput comes from batches"), so producers pack events into `UsageBatch` envelopes. Each
envelope is built for one destination partition: the partition Kafka's default partitioner gives
the event's `event_id` (`partition_for`). A duplicate therefore lands on the partition of its
first copy whether it travels alone or packed, and dedupe stays local to a partition.

`send` returns only after the broker acknowledged every envelope (acks=all): an edge answers 2xx
only then (design.md, invariant 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from schemas.errors import AllotmentError
from schemas.topics import USAGE
from schemas.usage import UsageRecorded
from services.common.kafka import partition_for, start_producer

DEFAULT_ENVELOPE_SIZE = 500
MAX_ENVELOPE_SIZE = 10_000  # UsageBatch.events max_length


class UsageNotAcknowledged(AllotmentError):
    """The broker did not acknowledge an envelope; the caller must not report success."""

    def __init__(self, topic: str, partition: int, events: int, cause: str) -> None:
        self.topic = topic
        self.partition = partition
        self.events = events
        self.cause = cause
        super().__init__(
            f"usage: {events} events for {topic}[{partition}] not acknowledged: {cause}"
        )


def pack_envelopes(
    events: Iterable[Mapping[str, Any]], partitions: int, envelope_size: int
) -> list[tuple[int, bytes, bytes]]:
    """Group wire-form usage events into envelopes per destination partition.

    Returns (partition, key, value) triples in the order the events came, per partition, so
    an event's position inside its partition follows the caller's order. The key is the first
    event's id: it names the envelope for humans; the partition is set explicitly.
    """
    if not 1 <= envelope_size <= MAX_ENVELOPE_SIZE:
        raise ValueError(f"envelope_size: must be within 1..{MAX_ENVELOPE_SIZE}")
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for event in events:
        groups.setdefault(partition_for(str(event["event_id"]), partitions), []).append(event)
    packed = []
    for partition, group in groups.items():
        for start in range(0, len(group), envelope_size):
            chunk = group[start : start + envelope_size]
            value = orjson.dumps({"type": "UsageBatch", "version": 1, "events": chunk})
            packed.append((partition, str(chunk[0]["event_id"]).encode(), value))
    return packed


class UsageProducer:
    """Sends usage events in envelopes and waits for the broker's acknowledgement.

    Built by a composition root (`start()` connects); one instance per process is enough.
    """

    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str,
        envelope_size: int = DEFAULT_ENVELOPE_SIZE,
        linger_ms: int = 5,
    ) -> None:
        self.topic = USAGE.name(topic_prefix)
        self.envelope_size = envelope_size
        self._bootstrap = bootstrap
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0

    async def start(self) -> None:
        producer = await start_producer(
            self._bootstrap,
            linger_ms=self._linger_ms,
            max_request_size=8 * 1024 * 1024,
            compression_type=None,
        )
        try:
            partitions = await producer.partitions_for(self.topic)
        except UnknownTopicOrPartitionError:
            partitions = set()
        except BaseException:
            await producer.stop()
            raise
        if not partitions:
            await producer.stop()
            raise UsageNotAcknowledged(self.topic, -1, 0, "topic does not exist")
        self._producer = producer
        self._partitions = len(partitions)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> UsageProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, events: Sequence[UsageRecorded]) -> int:
        """Send validated events; returns how many envelopes the broker acknowledged."""
        return await self.send_wire([event.to_wire() for event in events])

    async def send_wire(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Send events already in wire form (validated by the caller)."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("UsageProducer.start() was not called")
        packed = pack_envelopes(events, self._partitions, self.envelope_size)
        futures = [
            await producer.send(self.topic, value=value, key=key, partition=partition)
            for partition, key, value in packed
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for (partition, _, value), result in zip(packed, results, strict=True):
            if isinstance(result, BaseException):
                count = len(orjson.loads(value)["events"])
                raise UsageNotAcknowledged(self.topic, partition, count, repr(result))
        return len(packed)
