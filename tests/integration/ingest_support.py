"""Ingest integration test helpers: a real server on a free port, and key rings.

The server is uvicorn in a thread of the test process, serving the real app over the real
Kafka sink; it is stopped when the `with` block ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fakes.net import free_port

from schemas.usage import UsageRecorded
from services.ingest.app import create_app
from services.ingest.keys import KeyRing, parse_keys
from services.ingest.publisher import KafkaUsageSink, UsageSink


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


class MemorySink:
    """Accepts everything in memory: for tests about reading input, not about Kafka."""

    def __init__(self) -> None:
        self.events: list[UsageRecorded] = []

    async def publish(self, events: Sequence[UsageRecorded]) -> None:
        self.events.extend(events)

    async def stop(self) -> None:
        return None
