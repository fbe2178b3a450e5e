"""Ingest integration test helpers: a real server on a free port, the usage topic's content.

The server is uvicorn in a thread of the test process, serving the real app over the real
Kafka sink; it is stopped when the `with` block ends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from schemas.codec import decode
from schemas.topics import USAGE
from schemas.usage import UsageBatch, UsageRecorded
from services.ingest.app import create_app
from services.ingest.keys import KeyRing, parse_keys
from services.ingest.publisher import KafkaUsageSink, UsageSink


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def key_ring(*entries: dict[str, Any], environ: dict[str, str] | None = None) -> KeyRing:
    return parse_keys({"keys": list(entries)}, environ or {})


@contextmanager
def serve(keys: KeyRing, sink: UsageSink) -> Iterator[str]:
    """Run the ingest app on 127.0.0.1:<free port>; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(keys, sink), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("ingest server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def kafka_sink(bootstrap: str, prefix: str) -> KafkaUsageSink:
    return KafkaUsageSink(bootstrap, prefix, timeout_s=20)


async def read_usage(
    bootstrap: str, prefix: str, expected: int, timeout_s: float = 30
) -> list[tuple[int, UsageRecorded]]:
    """Every (partition, event) on the prefix's usage topic, waiting for `expected` events."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        USAGE.name(prefix),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[int, UsageRecorded]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    envelope = decode(message.value)
                    assert isinstance(envelope, UsageBatch)
                    found.extend((tp.partition, e) for e in envelope.events)
        # Anything beyond `expected` that is already there is returned too.
        for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
            for message in messages:
                envelope = decode(message.value)
                assert isinstance(envelope, UsageBatch)
                found.extend((tp.partition, e) for e in envelope.events)
    finally:
        await consumer.stop()
    return found
