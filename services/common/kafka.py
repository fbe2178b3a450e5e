"""Kafka plumbing shared by every edge: topic creation, the partition of a key, reading a topic.

Producers that pack usage into envelopes must pick the partition Kafka's default partitioner
would pick for each event_id, so an event lands on the same partition whether it travels alone
or in a batch; `partition_for` is that rule.
"""

from __future__ import annotations

import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from schemas.errors import AllotmentError
from schemas.topics import ALIGNED_CONFIGS, ALL, TopicSpec

log = logging.getLogger("allotment.kafka")


def partition_for(key: str, partitions: int) -> int:
    """The partition the Java and aiokafka default partitioners choose for `key`."""
    return (murmur2_words(key.encode()) & 0x7FFFFFFF) % partitions


def murmur2_words(data: bytes) -> int:
    """Kafka's murmur2, equal to aiokafka's `murmur2`, about twice as fast.

    Producers hash every usage event id to pack envelopes; reading the key four bytes at a
    time with `struct` instead of byte by byte halves that cost on the ingest hot path.
    """
    length = len(data)
    m = 0x5BD1E995
    h = 0x9747B28C ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = words << 2
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    """Broker settings for a topic; compacted topics clean often so restores stay short."""
    config = {"cleanup.policy": "compact" if spec.compacted else "delete"}
    if spec.compacted:
        config["min.cleanable.dirty.ratio"] = "0.1"
        config["segment.ms"] = "600000"
    config.update(spec.config)
    return config


async def ensure_topics(
    bootstrap: str, prefix: str, specs: list[TopicSpec] | None = None
) -> list[str]:
    """Create the project's topics that do not exist yet; returns the names it created.

    Topics that exist already get the `ALIGNED_CONFIGS` keys of their spec (see
    `align_topic_configs`); nothing else about them changes.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [s for s in (specs or ALL) if s.name(prefix) in existing]
        await align_topic_configs(admin, prefix, present)
        wanted = [s for s in (specs or ALL) if s.name(prefix) not in existing]
        if not wanted:
            return []
        new = [
            NewTopic(
                name=s.name(prefix),
                num_partitions=s.partitions,
                replication_factor=1,
                topic_configs=topic_configs(s),
            )
            for s in wanted
        ]
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        return [s.name(prefix) for s in wanted]
    finally:
        await admin.close()


DYNAMIC_TOPIC_CONFIG = 1
"""DescribeConfigs' `config_source` of a value set on the topic itself (not a broker default)."""


async def align_topic_configs(
    admin: AIOKafkaAdminClient, prefix: str, specs: list[TopicSpec]
) -> list[str]:
    """Set the spec's `ALIGNED_CONFIGS` keys on existing topics whose value differs; returns the
    names it changed. Idempotent: a topic already aligned costs one DescribeConfigs round trip.

    aiokafka has no IncrementalAlterConfigs, and AlterConfigs replaces a topic's whole set of
    topic-level values, so the values the topic has now (retention.ms=-1, cleanup.policy...) are
    read and sent back with the aligned keys: nothing else changes, unless an operator alters
    the same topic in the same instant (then run `allotment create-topics` again).
    """
    targets = [s for s in specs if any(k in s.config for k in ALIGNED_CONFIGS)]
    if not targets:
        return []
    names = [s.name(prefix) for s in targets]
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    current = {
        resource[3]: (resource[0], resource[1], resource[4])
        for response in described
        for resource in response.resources
    }
    changes = []
    for spec, name in zip(targets, names, strict=True):
        error_code, error_message, entries = current[name]
        if error_code:
            raise TopicConfigFailed(name, f"describe: error {error_code} {error_message}")
        own = {e[0]: e[1] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG}
        wanted = {k: spec.config[k] for k in ALIGNED_CONFIGS if k in spec.config}
        if all(own.get(k) == v for k, v in wanted.items()):
            continue
        if any(e[4] for e in entries if e[3] == DYNAMIC_TOPIC_CONFIG):
            raise TopicConfigFailed(name, "has a sensitive topic config that cannot be read back")
        changes.append(ConfigResource(ConfigResourceType.TOPIC, name, {**own, **wanted}))
    if not changes:
        return []
    for response in await admin.alter_configs(changes):
        for error_code, error_message, _, name in response.resources:
            if error_code:
                raise TopicConfigFailed(name, f"alter: error {error_code} {error_message}")
    aligned = [c.name for c in changes]
    log.info("topic configs aligned", extra={"topics": aligned, "keys": list(ALIGNED_CONFIGS)})
    return aligned


class TopicConfigFailed(AllotmentError):
    """The broker would not describe or change a topic's config while aligning it."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"{topic}: aligning its config failed: {reason}")


async def start_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    """A started producer for facts: acks=all, and idempotent, so its own retries never write a
    record twice. `options` go to `AIOKafkaProducer` (timeouts, linger).

    A producer whose `start()` failed (broker down) is stopped here: aiokafka leaves it
    half-open, and its connections and tasks would outlive the caller's error.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **options
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


class TopicReadStalled(AllotmentError, TimeoutError):
    """A topic read from offset zero stopped moving before its end: what was folded is partial.

    A TimeoutError too, so a caller that already treats an unreachable broker as "try later"
    (the API answers 503) treats this the same way instead of using a partial read model.
    """

    def __init__(self, topic: str, behind: int) -> None:
        self.topic = topic
        self.behind = behind
        super().__init__(f"{topic}: reading stalled {behind} records before the end")


async def read_from_start(
    bootstrap: str,
    topic: str,
    partitions: int,
    on_value: Callable[[bytes | None], None],
    *,
    isolation_level: str = "read_uncommitted",
    stall_polls: int = 100,
) -> None:
    """Pass every value of `topic` to `on_value`, from offset zero to (at least) its end.

    Read models folded from a topic at start (the API's configuration, the budgets mirror) all
    need this one loop. It returns once every partition reached the end offset it had when the
    call began. After `stall_polls` polls in a row (300 ms each) in which no position moved it
    raises `TopicReadStalled` rather than return a partial fold. The consumer is stopped also
    when `start()` itself fails (broker down), so nothing leaks.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation_level,
        auto_offset_reset="earliest",
    )
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)
        positions = [await consumer.position(tp) for tp in tps]
        still = 0
        while any(pos < ends[tp] for pos, tp in zip(positions, tps, strict=True)):
            if still >= stall_polls:
                behind = sum(ends[tp] - pos for pos, tp in zip(positions, tps, strict=True))
                raise TopicReadStalled(topic, behind)
            batch = await consumer.getmany(*tps, timeout_ms=300, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    on_value(message.value)
            moved = [await consumer.position(tp) for tp in tps]
            still = 0 if moved != positions else still + 1
            positions = moved
    finally:
        await consumer.stop()
