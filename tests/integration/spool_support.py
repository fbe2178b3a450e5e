"""Helpers for tests of the proxy's spool and sender: rows as the proxy writes them, and an
emitter running against the real broker that is always stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from schemas.codec import encode
from services.proxy.emitter import UsageEmitter, UsageRecord, UsageSink, to_event
from services.proxy.spool import Spool
from services.proxy.usage import Tokens


def spool_row(
    request_id: str,
    tenant: str,
    tags: tuple[str, ...] = (),
    endpoint: str = "/v1/chat/completions",
) -> tuple[str, bytes]:
    """(event_id, encoded event) of one finished request, as the emitter spools it."""
    now = datetime.now(UTC)
    record = UsageRecord(
        request_id, now, tenant, None, None, None, "key1", tags, "openai", endpoint,
        "gpt-4o", "gpt-4o", Tokens(10, 0, 0, 5, 0), "reported", "forwarded",
    )  # fmt: skip
    event = to_event(record, now)
    return event.event_id, encode(event)


@asynccontextmanager
async def running_emitter(
    spool: Spool, bootstrap: str, prefix: str, sink: UsageSink | None = None
) -> AsyncIterator[UsageEmitter]:
    """An emitter sending `spool` to `prefix`'s usage topic (through `sink` if given); stopped
    on the way out."""
    sink = sink or UsageSink(bootstrap, prefix)
    emitter = UsageEmitter(spool, sink, lambda: datetime.now(UTC))
    emitter.start()
    try:
        yield emitter
    finally:
        await emitter.stop(1.0)
