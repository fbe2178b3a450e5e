"""The usage and budget-events topics store the broker's append time, also when they were
created before that rule.

A record produced with a timestamp 30 days in the past must be read back with the time the
broker appended it: the worker's dedupe window runs on record time (review 17, finding 6), and
the warehouse compares budget-events record times with usage record times (which budget
revision was in force), so both must be the broker's clock.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fakes.kafka_io import config_when

from schemas.topics import ALIGNED_CONFIGS, BUDGET_EVENTS, USAGE, TopicSpec
from services.common.kafka import align_topic_configs, ensure_topics, topic_configs

LOG_APPEND_TIME = 1
MONTH_AGO_MS = round((datetime.now(UTC) - timedelta(days=30)).timestamp() * 1000)


async def _stored_timestamp(bootstrap: str, topic: str) -> tuple[int, int]:
    """Produce one record stamped 30 days ago: (timestamp, timestamp_type) as a consumer reads."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"{}", partition=0, timestamp_ms=MONTH_AGO_MS)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await consumer.getone(tp)
    finally:
        await consumer.stop()
    return record.timestamp, record.timestamp_type


APPEND_TIME_TOPICS = pytest.mark.parametrize("spec", [USAGE, BUDGET_EVENTS], ids=lambda s: s.suffix)


@APPEND_TIME_TOPICS
async def test_a_month_old_record_is_stored_with_the_append_time(
    kafka_bootstrap: str, topic_prefix: str, spec: TopicSpec
) -> None:
    timestamp, kind = await _stored_timestamp(kafka_bootstrap, spec.name(topic_prefix))
    assert kind == LOG_APPEND_TIME
    assert timestamp > MONTH_AGO_MS + 29 * 86_400_000


@APPEND_TIME_TOPICS
async def test_an_existing_topic_is_aligned_once_and_keeps_its_other_config(
    kafka_bootstrap: str, spec: TopicSpec
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    name = spec.name(prefix)
    kept = {k: v for k, v in spec.config.items() if k not in ALIGNED_CONFIGS}
    before = replace(spec, config=kept)  # the spec as it was
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=topic_configs(before))])
        old_timestamp, old_kind = await _stored_timestamp(kafka_bootstrap, name)
        assert (old_timestamp, old_kind) == (MONTH_AGO_MS, 0)  # CreateTime: the producer's

        assert await ensure_topics(kafka_bootstrap, prefix, [spec]) == []  # nothing created
        configs = await config_when(
            kafka_bootstrap, name, "message.timestamp.type", "LogAppendTime"
        )
        assert configs["retention.ms"] == "-1"
        assert configs["cleanup.policy"] == "delete"
        timestamp, kind = await _stored_timestamp(kafka_bootstrap, name)
        assert kind == LOG_APPEND_TIME
        assert timestamp > MONTH_AGO_MS + 29 * 86_400_000
        assert await align_topic_configs(admin, prefix, [spec]) == []  # already aligned
    finally:
        await admin.delete_topics([name])
        await admin.close()
