"""The one way Allotment's own edges (ingest, proxy) put usage on Kafka: packed envelopes.

One Kafka message per usage event caps a Faust worker near 10,000 messages/s (design.md,
"Throughput comes from batches"), so producers pack events into `UsageBatch` envelopes. Each
envelope is built for one destination partition: the partition Kafka's default partitioner gives
the event's `event_id` (`partition_for`). A duplicate therefore lands on the partition of its
first copy whether it travels alone or packed, and dedupe stays local to a partition.

An envelope is capped by count and by encoded size (`ENVELOPE_MAX_BYTES`, a margin below the
usage topic's `max.message.bytes`): a count alone lets a backlog of large events build a message
the broker refuses every time, which jams whoever resends it. An event too large for any
envelope is reported (`EventTooLarge`) after the others are sent, never retried. An event
within that cap that the broker still refuses alone is not "too large": the topic takes less
than it should (`TopicLimitTooLow`, a deployment whose topic was never aligned), and aligning it
(`allotment create-topics`) makes the same event sendable, so callers keep it and retry.

`send` returns only after the broker acknowledged every envelope (acks=all): an edge answers 2xx
only then (design.md, invariant 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    UnknownTopicOrPartitionError,
)

from schemas.errors import AllotmentError
from schemas.topics import USAGE, USAGE_MAX_MESSAGE_BYTES
from schemas.usage import UsageRecorded
from services.common.kafka import partition_for, start_producer

log = logging.getLogger(__name__)

DEFAULT_ENVELOPE_SIZE = 500
MAX_ENVELOPE_SIZE = 10_000  # UsageBatch.events max_length
ENVELOPE_MAX_BYTES = USAGE_MAX_MESSAGE_BYTES - 128 * 1024
"""Largest envelope value; the margin covers the key, the record and batch headers, and
aiokafka putting a few small envelopes of one partition into one record batch (16 KB)."""
_HEAD = b'{"type":"UsageBatch","version":1,"events":['
_TAIL = b"]}"
MAX_EVENT_BYTES = ENVELOPE_MAX_BYTES - len(_HEAD) - len(_TAIL)
"""Largest encoded event (orjson of its wire form) that can travel, alone in an envelope: an
edge that checks this per record can reject a larger one by name instead of failing its batch."""
_MAX_ROUNDS = 64  # split-and-resend rounds before giving up (each round halves something)
_BREAKS_PRODUCER = (MessageSizeTooLargeError, OutOfOrderSequenceNumber)
"""Errors after which an idempotent producer is unusable: a refused batch breaks the sequence
of its partition, and the next batches fail OutOfOrderSequenceNumber, which stops its sender."""

Item = Mapping[str, Any] | tuple[str, bytes]
"""A usage event in wire form, or already encoded as (event_id, JSON bytes) (the proxy's spool)."""


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


class EventTooLarge(UsageNotAcknowledged):
    """Events over our envelope cap even alone; every other event of the same send was
    acknowledged. Resending them cannot succeed: set them aside or reject them. (An event within
    the cap that the topic refuses is `TopicLimitTooLow`, never this.)
    """

    def __init__(self, topic: str, sizes: Mapping[str, int], limit: int) -> None:
        self.event_ids = list(sizes)
        self.sizes = dict(sizes)
        self.limit = limit
        largest = max(sizes.values())
        super().__init__(
            topic,
            -1,
            len(sizes),
            f"event too large for the usage topic: alone in an envelope it takes {largest} "
            f"bytes; an envelope may have {limit} at most (first: {self.event_ids[0]})",
        )


class TopicLimitTooLow(UsageNotAcknowledged):
    """The usage topic refused events alone although each is within our envelope cap: its
    max.message.bytes is below ours. Not the events' fault, so not `EventTooLarge`: they are
    unacknowledged (503, kept in the spool) until an operator aligns the topic. Every other
    event of the send was acknowledged; `event_ids` lists every one that was not (these and
    any too large for our cap), so a caller that keeps them knows which to keep.
    """

    def __init__(
        self, topic: str, refused: Mapping[str, int], cap: int, unsent: Sequence[str]
    ) -> None:
        self.sizes = dict(refused)
        self.cap = cap
        self.event_ids = list(unsent)
        smallest = min(refused.values())
        super().__init__(
            topic,
            -1,
            len(self.event_ids),
            f"the topic refused {len(refused)} events alone (the smallest {smallest} bytes) "
            f"although our envelope cap is {cap}: its max.message.bytes is below ours; run "
            f"`allotment create-topics` to align it (first: {next(iter(refused))})",
        )


@dataclass(slots=True)
class Envelope:
    """One message: its partition, key and value, and the events it carries (kept so a refused
    envelope can be split and sent again)."""

    partition: int
    key: bytes
    value: bytes
    events: list[Item]


def _event_id(item: Item) -> str:
    return item[0] if isinstance(item, tuple) else str(item["event_id"])


def _value(chunk: list[Item]) -> bytes:
    if isinstance(chunk[0], tuple):
        return _HEAD + b",".join(data for _, data in chunk) + _TAIL  # type: ignore[misc]
    return orjson.dumps({"type": "UsageBatch", "version": 1, "events": chunk})


def pack_items(
    items: Iterable[Item], partitions: int, envelope_size: int, max_bytes: int = ENVELOPE_MAX_BYTES
) -> tuple[list[Envelope], dict[str, int]]:
    """Group events into envelopes per destination partition, each of at most `envelope_size`
    events and `max_bytes` bytes; returns the envelopes and the events too large to travel even
    alone (event_id -> size of its one-event envelope).

    Events keep the caller's order within a partition, so an event's position inside its
    partition follows it. The key is the first event's id: it names the envelope for humans;
    the partition is set explicitly. A chunk over `max_bytes` is halved until it fits: events
    are rarely large, and the common case stays one encoding per chunk.
    """
    if not 1 <= envelope_size <= MAX_ENVELOPE_SIZE:
        raise ValueError(f"envelope_size: must be within 1..{MAX_ENVELOPE_SIZE}")
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(partition_for(_event_id(item), partitions), []).append(item)
    packed: list[Envelope] = []
    too_large: dict[str, int] = {}
    for partition, group in groups.items():
        for start in range(0, len(group), envelope_size):
            _fit(partition, group[start : start + envelope_size], max_bytes, packed, too_large)
    return packed, too_large


def _fit(
    partition: int,
    chunk: list[Item],
    max_bytes: int,
    packed: list[Envelope],
    too_large: dict[str, int],
) -> None:
    value = _value(chunk)
    if len(value) <= max_bytes:
        packed.append(Envelope(partition, _event_id(chunk[0]).encode(), value, chunk))
    elif len(chunk) == 1:
        too_large[_event_id(chunk[0])] = len(value)
    else:
        middle = len(chunk) // 2
        _fit(partition, chunk[:middle], max_bytes, packed, too_large)
        _fit(partition, chunk[middle:], max_bytes, packed, too_large)


def pack_envelopes(
    events: Iterable[Mapping[str, Any]],
    partitions: int,
    envelope_size: int,
    max_bytes: int = ENVELOPE_MAX_BYTES,
) -> list[tuple[int, bytes, bytes]]:
    """Wire-form events packed as `pack_items` does: (partition, key, value) triples. Raises
    `EventTooLarge` if an event cannot travel even alone."""
    packed, too_large = pack_items(events, partitions, envelope_size, max_bytes)
    if too_large:
        raise EventTooLarge(USAGE.suffix, too_large, max_bytes)
    return [(e.partition, e.key, e.value) for e in packed]


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
        max_bytes: int = ENVELOPE_MAX_BYTES,
    ) -> None:
        self.topic = USAGE.name(topic_prefix)
        self.envelope_size = envelope_size
        self.max_bytes = max_bytes
        self._bootstrap = bootstrap
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self._restarting = asyncio.Lock()
        self.restarts = 0

    async def start(self) -> None:
        async with self._restarting:
            if self._producer is None:
                self._producer, self._partitions = await self._connect()

    async def _connect(self) -> tuple[AIOKafkaProducer, int]:
        """A started producer and the usage topic's partition count; nothing leaks on failure."""
        producer = await start_producer(
            self._bootstrap,
            linger_ms=self._linger_ms,
            max_request_size=USAGE_MAX_MESSAGE_BYTES,
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
        return producer, len(partitions)

    async def stop(self) -> None:
        """Stop the producer; waits for a restart in progress, so the one it installs is the
        one stopped here (a restart never outlives `stop`)."""
        async with self._restarting:
            producer, self._producer = self._producer, None
            if producer is not None:
                await producer.stop()

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
        return await self.send_items(list(events))

    async def send_encoded(self, encoded: Sequence[tuple[str, bytes]]) -> int:
        """Send events already encoded, as (event_id, JSON bytes) pairs."""
        return await self.send_items(list(encoded))

    async def send_items(self, items: list[Item]) -> int:
        """Send events; returns how many envelopes the broker acknowledged.

        Events too large for any envelope are left out and reported by `EventTooLarge` once
        every other event is acknowledged. An envelope the broker refuses as too large (a
        topic whose `max.message.bytes` is below ours) is split in two and sent again through
        a new producer; an event it refuses alone is reported by `TopicLimitTooLow` (logged as
        an error) once the rest is acknowledged. An envelope that failed because its producer
        broke or was replaced meanwhile (by another send's restart) is sent again as it is. Any
        other failure is `UsageNotAcknowledged`: concurrent sends on one instance never see a
        missing producer.
        """
        self._current(len(items))
        pending, too_large = pack_items(items, self._partitions, self.envelope_size, self.max_bytes)
        sent = 0
        refused: dict[str, int] = {}  # within our cap, yet refused alone: the topic's fault
        for _ in range(_MAX_ROUNDS):
            producer, failed = await self._produce(pending)
            sent += len(pending) - len(failed)
            if not failed:
                break
            if any(isinstance(exc, _BREAKS_PRODUCER) for _, exc in failed):
                await self._restart(producer, sum(len(e.events) for e, _ in failed))
            elif self._producer is producer:  # not replaced meanwhile: a failure of its own
                envelope, exc = failed[0]
                raise UsageNotAcknowledged(
                    self.topic, envelope.partition, len(envelope.events), repr(exc)
                )
            pending = []
            for envelope, exc in failed:
                if not isinstance(exc, MessageSizeTooLargeError):
                    pending.append(envelope)
                elif len(envelope.events) == 1:
                    refused[_event_id(envelope.events[0])] = len(envelope.value)
                else:
                    middle = len(envelope.events) // 2
                    for half in (envelope.events[:middle], envelope.events[middle:]):
                        _fit(envelope.partition, half, self.max_bytes, pending, too_large)
        else:
            raise UsageNotAcknowledged(self.topic, -1, len(pending), "still failing")
        if refused:
            error = TopicLimitTooLow(self.topic, refused, self.max_bytes, [*refused, *too_large])
            log.error("%s", error)
            raise error
        if too_large:
            raise EventTooLarge(self.topic, too_large, self.max_bytes)
        return sent

    def _current(self, events: int) -> AIOKafkaProducer:
        """The installed producer; none only before `start` or after `stop` (a restart swaps)."""
        if self._producer is None:
            raise UsageNotAcknowledged(self.topic, -1, events, "the producer is not started")
        return self._producer

    async def _produce(
        self, envelopes: list[Envelope]
    ) -> tuple[AIOKafkaProducer, list[tuple[Envelope, BaseException]]]:
        """Send every envelope; the producer used, and the envelopes that failed with their
        error."""
        producer = self._current(sum(len(e.events) for e in envelopes))
        waiting: list[tuple[Envelope, asyncio.Future[Any]]] = []
        failed: list[tuple[Envelope, BaseException]] = []
        for envelope in envelopes:
            try:
                future = await producer.send(
                    self.topic, value=envelope.value, key=envelope.key, partition=envelope.partition
                )
            except KafkaError as exc:  # refused by the client, or the producer broke or closed
                failed.append((envelope, exc))
                continue
            waiting.append((envelope, future))
        results = await asyncio.gather(*(f for _, f in waiting), return_exceptions=True)
        for (envelope, _), result in zip(waiting, results, strict=True):
            if isinstance(result, BaseException):
                failed.append((envelope, result))
        return producer, failed

    async def _restart(self, broken: AIOKafkaProducer, events: int = 0) -> None:
        """Replace `broken` by a new producer, once, however many sends saw it fail.

        Shielded: a caller's deadline must not cancel it between starting the new producer
        and stopping the old one, which would leave one of them running and owned by nobody.
        """
        try:
            await asyncio.shield(self._replace(broken))
        except (KafkaError, OSError) as exc:
            raise UsageNotAcknowledged(
                self.topic, -1, events, f"cannot restart the producer: {exc!r}"
            ) from None

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        # The new producer is started before the swap, so a concurrent send finds either the
        # broken one (its failure is then resent) or the new one, never none. Under the lock
        # that `stop` takes too: whichever producer is installed last is the one `stop` stops.
        async with self._restarting:
            current = self._producer is broken
            if not current:  # replaced by another send already, or stopped
                return
            self._producer, self._partitions = await self._connect()
            self.restarts += 1
            with contextlib.suppress(Exception):  # broken already: its errors are known
                await broken.stop()
