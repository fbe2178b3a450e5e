"""A shared `UsageProducer` restarting its client under concurrent sends (review 3B, finding 1).

Ingest shares one producer across requests. When the broker refuses an envelope as too large,
the producer splits it and resends through a new aiokafka client (an idempotent one is unusable
after a refused batch). Before, the restart stopped the old client before starting the new one:
sends arriving meanwhile raised RuntimeError (HTTP 500), and a restart racing a `stop` left a
started client nobody stopped. Now every concurrent send succeeds or fails cleanly
(`UsageNotAcknowledged`), what was acknowledged is on the topic, and every client is stopped.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from fakes.kafka_io import config_when, read_usage_by_partition
from test_common_usage_envelope_size import _event, _set_topic_config

import services.common.usage_producer as usage_producer
from schemas.topics import USAGE
from services.common.usage_producer import UsageNotAcknowledged, UsageProducer


def _track(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaProducer]:
    """Every aiokafka producer the UsageProducer starts, to check each was stopped."""
    started: list[AIOKafkaProducer] = []
    original = usage_producer.start_producer

    async def tracked(bootstrap: str, **options: Any) -> AIOKafkaProducer:
        producer = await original(bootstrap, **options)
        started.append(producer)
        return producer

    monkeypatch.setattr(usage_producer, "start_producer", tracked)
    return started


async def test_small_sends_beside_refused_big_ones_succeed_or_fail_cleanly(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = USAGE.name(topic_prefix)
    await _set_topic_config(kafka_bootstrap, topic, {"max.message.bytes": "200000"})
    await config_when(kafka_bootstrap, topic, "max.message.bytes", "200000")
    started = _track(monkeypatch)
    complaints: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: complaints.append(str(context.get("message")))
    )
    outcomes: Counter[str] = Counter()
    acknowledged: list[str] = []
    done = asyncio.Event()
    producer = UsageProducer(kafka_bootstrap, topic_prefix)
    await producer.start()

    async def small() -> None:
        while not done.is_set():
            events = [_event(i, uuid.uuid4().hex[:8]) for i in range(3)]
            try:
                await producer.send_wire(events)
            except UsageNotAcknowledged:
                outcomes["not acknowledged"] += 1
            except Exception as exc:  # the defect: RuntimeError, ProducerClosed, ...
                outcomes[type(exc).__name__] += 1
            else:
                outcomes["ok"] += 1
                acknowledged.extend(e["event_id"] for e in events)
            await asyncio.sleep(0)

    senders = [asyncio.create_task(small()) for _ in range(4)]
    try:
        for _ in range(2):
            big = [_event(i, uuid.uuid4().hex[:8]) for i in range(1500)]
            await producer.send_wire(big)
            acknowledged.extend(e["event_id"] for e in big)
    finally:
        done.set()
        await asyncio.gather(*senders)
        await producer.stop()
    assert producer.restarts >= 2, producer.restarts
    assert set(outcomes) <= {"ok", "not acknowledged"}, outcomes
    assert outcomes["ok"] >= 4, outcomes  # the small sends did run beside the restarts
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, len(acknowledged), 60)
    ids = Counter(e.event_id for _, e in on_topic)
    copies = sum(ids.values()) - len(ids)
    print(f"restarts {producer.restarts}, small sends {dict(outcomes)}, resent copies {copies}")
    assert set(acknowledged) <= set(ids)  # nothing acknowledged is missing (dupes dedupe)
    assert len(started) == producer.restarts + 1
    assert all(p._closed for p in started), [p._closed for p in started]
    gc.collect()
    assert not [c for c in complaints if "Unclosed" in c], complaints


async def test_a_stop_during_a_restart_stops_the_new_client(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest publisher stops a producer that failed a request while another request may be
    restarting it: the client that restart installs must be stopped too, not leaked."""
    started = _track(monkeypatch)
    producer = UsageProducer(kafka_bootstrap, topic_prefix)
    await producer.start()
    broken = producer._producer
    assert broken is not None
    restart = asyncio.create_task(producer._restart(broken))
    while not producer._restarting.locked():  # the restart holds the lock and is connecting
        await asyncio.sleep(0)
    await producer.stop()
    await restart
    assert len(started) == 2
    assert all(p._closed for p in started)
    with pytest.raises(UsageNotAcknowledged, match="not started"):
        await producer.send_wire([_event(0, "after-stop")])
