"""The producer flush before an offset commit covers every table write made before it.

A table write is queued in Faust's producer buffer and sent by the buffer's own task. Faust
commits offsets right after `producer.flush()`; a write that flush did not wait for can be
lost (kill -9, or a send refused after the commit) although its event's offset is committed.
Here each send is slowed down the way aiokafka's `send` is when it waits for room in a full
accumulator, and the writes go to the real broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
from pipeline_harness import read_all

from schemas.topics import POLICIES
from streams.faust.app import WorkerConfig, build_app
from streams.faust.delivery import AcknowledgedBuffer

WRITES = 3


async def _flush_with_slow_sends(app: faust.App, topic_name: str) -> list[Any]:
    """Queue WRITES records as a table write does (`send_soon`), flush, and hand back their
    deliveries exactly as they were when the flush returned (done or not)."""
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw", internal=False)
    publish = topic.publish_message

    async def slow_publish(fut: Any, wait: bool = False) -> Any:
        await asyncio.sleep(0.3)  # aiokafka's add_message waiting for a batch to drain
        return await publish(fut, wait=wait)

    topic.publish_message = slow_publish  # type: ignore[method-assign]
    producer = app.producer
    await producer.start()
    try:
        futs = [topic.send_soon(key=b"k", value=f"v{i}".encode()) for i in range(WRITES)]
        await asyncio.sleep(0)  # the buffer's task takes the first one
        await producer.flush()
        state = [(fut.done(), fut.done() and fut.exception() is None) for fut in futs]
        await asyncio.gather(*futs, return_exceptions=True)
        return state
    finally:
        await producer.stop()


async def test_the_worker_producer_flush_waits_for_every_queued_write(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    config = WorkerConfig(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, store_dir=tmp_path)
    app = build_app(config)
    assert isinstance(app.producer.buffer, AcknowledgedBuffer)
    topic = POLICIES.name(topic_prefix)
    state = await _flush_with_slow_sends(app, topic)
    assert state == [(True, True)] * WRITES
    records = await read_all(kafka_bootstrap, topic)
    assert sorted(r.value for r in records) == [f"v{i}".encode() for i in range(WRITES)]


async def test_stock_faust_flush_returns_before_the_writes_are_acknowledged(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Why `AcknowledgedBuffer` exists: with Faust's own buffer the flush returns while writes
    are unsent. If a Faust upgrade makes this fail, the adapter may no longer be needed."""
    app = faust.App(
        f"{topic_prefix}.stock", broker=f"kafka://{kafka_bootstrap}", store="memory://",
        datadir=str(tmp_path), autodiscover=False, producer_acks=-1, web_enabled=False,
    )  # fmt: skip
    state = await _flush_with_slow_sends(app, POLICIES.name(topic_prefix))
    assert (False, False) in state
