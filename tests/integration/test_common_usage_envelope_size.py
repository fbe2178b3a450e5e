"""Usage envelopes fit the usage topic: capped by bytes as well as by count (review A, finding 1).

Before, 500 events of 2 KB made one 1.1 MB message, over the topic's limit: ingest answered 503
to every resend of the same request and the proxy's spool never drained. Now envelopes stay
under `ENVELOPE_MAX_BYTES`; a topic that takes less than that is met by splitting and resending;
an event too large for any envelope is reported once the others are acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fakes.kafka_io import config_when, read_usage_by_partition, topic_config
from ingest_support import kafka_sink, key_ring, serve

from schemas.topics import USAGE, USAGE_MAX_MESSAGE_BYTES
from services.common.kafka import ensure_topics, topic_configs
from services.common.usage_producer import (
    ENVELOPE_MAX_BYTES,
    MAX_EVENT_BYTES,
    EventTooLarge,
    TopicLimitTooLow,
    UsageProducer,
    pack_envelopes,
    pack_items,
)
from services.ingest.keys import hash_key

TAGS = [f"{i:02d}-" + "t" * 60 for i in range(30)]  # 30 tags of 63 characters


def _event(i: int, run: str, **extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "type": "UsageRecorded",
        "version": 1,
        "event_id": f"{run}-{i}",
        "source": "test",
        "occurred_at": now,
        "received_at": now,
        "tenant": "acme",
        "tags": TAGS,
        "input_uncached": 10,
        "output": 1,
        **extra,
    }


async def _set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


async def until_listed(admin: AIOKafkaAdminClient, name: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while name not in await admin.list_topics():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{name} not listed after {timeout} s")
        await asyncio.sleep(0.1)


def test_envelopes_are_capped_by_bytes_and_keep_every_event_in_order() -> None:
    events = [_event(i, "pack") for i in range(3000)]
    assert len(orjson.dumps(events[0])) > 2000  # 500 of them would be over 1 MB
    packed = pack_envelopes(events, 2, 500)
    assert all(len(value) <= ENVELOPE_MAX_BYTES for _, _, value in packed)
    for partition in (0, 1):
        ids = [
            e["event_id"] for p, _, v in packed if p == partition for e in orjson.loads(v)["events"]
        ]
        here = set(ids)
        mine = [e["event_id"] for e in events if e["event_id"] in here]
        assert ids == mine  # the caller's order within the partition
    assert sum(len(orjson.loads(v)["events"]) for _, _, v in packed) == 3000
    encoded = [(e["event_id"], orjson.dumps(e)) for e in events]  # the proxy spool's form
    assert [(e.partition, e.key, e.value) for e in pack_items(encoded, 2, 500)[0]] == packed


async def test_a_fresh_usage_topic_takes_what_the_producer_builds(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    config = await topic_config(kafka_bootstrap, USAGE.name(topic_prefix))
    assert config["max.message.bytes"] == str(USAGE_MAX_MESSAGE_BYTES)  # set when created


async def test_an_existing_usage_topic_gets_the_limit_and_keeps_its_other_config(
    kafka_bootstrap: str,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    name = USAGE.name(prefix)
    config = {k: v for k, v in topic_configs(USAGE).items() if k != "max.message.bytes"}
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1, topic_configs=config)])
        await until_listed(admin, name)
        assert await ensure_topics(kafka_bootstrap, prefix, [USAGE]) == []  # nothing created
        limit = str(USAGE_MAX_MESSAGE_BYTES)
        after = await config_when(kafka_bootstrap, name, "max.message.bytes", limit)
        assert (after["retention.ms"], after["message.timestamp.type"]) == ("-1", "LogAppendTime")
    finally:
        await admin.delete_topics([name])
        await admin.close()


def _record(run: str, i: int, **extra: Any) -> dict[str, Any]:
    """One /v1/usage record of this run."""
    return {
        "source_request_id": f"{run}-{i}",
        "occurred_at": "2026-11-27T10:00:00Z",
        "input_uncached": 10,
        "output": 5,
        **extra,
    }


def _with_prompt(run: str, size: int) -> list[dict[str, Any]]:
    """Three records; the second carries a prompt of `size` characters in its properties."""
    return [
        _record(run, i, properties={"prompt": "x" * (size if i == 1 else 10)}) for i in range(3)
    ]


async def _ingest(bootstrap: str, prefix: str, records: list[dict[str, Any]]) -> httpx.Response:
    """POST `records` to a real ingest service's /v1/usage, publishing to `prefix`'s topics."""
    keys = key_ring({"id": "gw", "tenant": "acme", "key_sha256": hash_key("big-key")})
    with serve(keys, kafka_sink(bootstrap, prefix)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await client.post(
                "/v1/usage", json=records, headers={"Authorization": "Bearer big-key"}
            )


async def test_ingest_takes_3000_events_with_many_tags_in_one_request(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    run = uuid.uuid4().hex[:6]
    records = [_record(run, i, tags=TAGS) for i in range(3000)]
    response = await _ingest(kafka_bootstrap, topic_prefix, records)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["accepted"] == 3000
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, 3000, 60)
    assert len({e.event_id for _, e in on_topic}) == len(on_topic) == 3000
    assert all(e.tags == TAGS for _, e in on_topic)


async def test_a_topic_that_takes_less_is_met_by_splitting_and_resending(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A deployment whose usage topic was never aligned (or an operator's lower limit): the
    refused envelopes are split and sent again through a new producer, not retried as they are."""
    topic = USAGE.name(topic_prefix)
    await _set_topic_config(kafka_bootstrap, topic, {"max.message.bytes": "200000"})
    await config_when(kafka_bootstrap, topic, "max.message.bytes", "200000")
    run = uuid.uuid4().hex[:6]
    async with UsageProducer(kafka_bootstrap, topic_prefix) as producer:
        await producer.send_wire([_event(i, run) for i in range(1500)])
        assert producer.restarts >= 1
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, 1500, 60)
    assert sorted(e.event_id for _, e in on_topic) == sorted(f"{run}-{i}" for i in range(1500))


async def test_an_event_too_large_for_any_envelope_is_named_and_the_rest_arrive(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    run = uuid.uuid4().hex[:6]
    huge = _event(10, run, properties={"prompt": "x" * ENVELOPE_MAX_BYTES})
    events = [_event(i, run) for i in range(10)] + [huge]
    async with UsageProducer(kafka_bootstrap, topic_prefix) as producer:
        with pytest.raises(EventTooLarge) as refused:
            await producer.send_wire(events)
    assert refused.value.event_ids == [f"{run}-10"]
    assert len(orjson.dumps(huge)) > MAX_EVENT_BYTES >= len(orjson.dumps(events[0]))
    assert "too large" in str(refused.value) and str(ENVELOPE_MAX_BYTES) in str(refused.value)
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, 10)
    assert sorted(e.event_id for _, e in on_topic) == sorted(f"{run}-{i}" for i in range(10))


async def test_ingest_rejects_an_event_too_large_by_record_and_takes_the_rest(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A record whose properties make its event too large for the topic is rejected by index
    (207); resending could never succeed, so it is not a 503 "resend the whole request"."""
    run = uuid.uuid4().hex[:6]
    records = _with_prompt(run, MAX_EVENT_BYTES)
    response = await _ingest(kafka_bootstrap, topic_prefix, records)
    assert response.status_code == 207, response.text[:300]
    body = response.json()
    assert body["accepted"] == 2
    [rejection] = body["rejected"]
    assert (rejection["index"], rejection["field"]) == (1, "(record)")
    assert f"the usage topic takes {ENVELOPE_MAX_BYTES}" in rejection["rule"]
    assert body["event_ids"][1] is None
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, 2, 60)
    assert sorted(e.event_id for _, e in on_topic) == sorted(body["event_ids"][::2])


async def _narrow_topic(bootstrap: str, prefix: str) -> str:
    """The usage topic of a deployment that was never aligned: it takes 200,000 bytes."""
    topic = USAGE.name(prefix)
    await _set_topic_config(bootstrap, topic, {"max.message.bytes": "200000"})
    await config_when(bootstrap, topic, "max.message.bytes", "200000")
    return topic


async def _align(bootstrap: str, prefix: str) -> None:
    """What `allotment create-topics` does to an existing usage topic."""
    await ensure_topics(bootstrap, prefix, [USAGE])
    limit = str(USAGE_MAX_MESSAGE_BYTES)
    await config_when(bootstrap, USAGE.name(prefix), "max.message.bytes", limit)


async def test_an_event_within_our_cap_that_the_topic_refuses_is_not_too_large(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Review 3B, finding 5: a 300 KB event refused by a topic that takes 200 KB is the
    topic's fault. Before, it was `EventTooLarge` (rejected for good, set aside) and the text
    named our cap as if it were the topic's; now it is `TopicLimitTooLow`, the rest arrive,
    and an error says to run `allotment create-topics`."""
    await _narrow_topic(kafka_bootstrap, topic_prefix)
    run = uuid.uuid4().hex[:6]
    big = _event(5, run, properties={"prompt": "x" * 300_000})
    events = [_event(i, run) for i in range(5)] + [big]
    caplog.set_level(logging.ERROR, logger="services.common.usage_producer")
    async with UsageProducer(kafka_bootstrap, topic_prefix) as producer:
        with pytest.raises(TopicLimitTooLow) as refused:
            await producer.send_wire(events)
    assert not isinstance(refused.value, EventTooLarge)
    assert refused.value.event_ids == [f"{run}-5"]
    assert "allotment create-topics" in str(refused.value)
    assert any("allotment create-topics" in r.getMessage() for r in caplog.records)
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, 5)
    assert sorted(e.event_id for _, e in on_topic) == sorted(f"{run}-{i}" for i in range(5))


async def test_ingest_answers_503_for_an_event_an_unaligned_topic_refuses(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Before: 207 with the record rejected "the usage topic takes 917504" (a client drops
    it: usage lost). Now 503 naming the fix; once the topic is aligned the resend is taken."""
    await _narrow_topic(kafka_bootstrap, topic_prefix)
    run = uuid.uuid4().hex[:6]
    records = _with_prompt(run, 300_000)
    response = await _ingest(kafka_bootstrap, topic_prefix, records)
    assert response.status_code == 503, response.text[:300]
    assert "allotment create-topics" in response.json()["error"]
    await _align(kafka_bootstrap, topic_prefix)
    response = await _ingest(kafka_bootstrap, topic_prefix, records)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["accepted"] == 3
