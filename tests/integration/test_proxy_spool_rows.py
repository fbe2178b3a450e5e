"""Each spool row travels on its own merits (review 3B, findings 5 and 6).

Finding 6: spooled bytes went into envelopes unparsed, so one corrupt row turned its whole
envelope (up to 500 events of any tenant) into invalid JSON that the pipeline dead-letters as one
record. Now a row that is not a usage event is set aside with its reason and the rest drain.

Finding 5: an event within our envelope cap that a topic never aligned refuses was set aside as
"too large" for good. Now it stays spooled (the rest is sent and deleted) until the topic is
aligned, and then it is sent.

Review 6, finding 4: the sender slept its backoff (up to 5 s) after every round that met such an
event, although the round sent the rest, so one refused event throttled the whole stream to about
1000 events/s. Now such an event is held out of the rounds and retried on its own timer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fakes.kafka_io import config_when
from fakes.proxy_harness import read_usage, unique_tenant, until
from spool_support import running_emitter, spool_row

import services.proxy.emitter as emitter_module
from schemas.topics import USAGE, USAGE_MAX_MESSAGE_BYTES
from services.common.kafka import ensure_topics
from services.common.usage_producer import TopicLimitTooLow
from services.proxy.emitter import UsageSink
from services.proxy.spool import Spool


def _reasons(spool: Spool) -> dict[str, str]:
    with sqlite3.connect(spool.path) as db:
        return dict(db.execute("SELECT event_id, reason FROM set_aside").fetchall())


async def test_a_corrupt_row_is_set_aside_and_its_neighbours_arrive(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant, other = unique_tenant(), unique_tenant()
    good = [spool_row(f"r-{i}", tenant if i % 2 else other) for i in range(20)]
    bad = [
        ("cut", b'{"event_id":"cut","tenant":"acme","out'),  # a torn write
        ("list", b"[1, 2]"),
        ("moved", good[0][1]),  # a whole event, but not the row's
    ]
    spool = Spool(tmp_path / "spool")
    spool.append(good[:10] + bad + good[10:])
    async with running_emitter(spool, kafka_bootstrap, topic_prefix) as emitter:
        await until(lambda: len(spool) == 0, timeout=60, what="the spool to drain")
    try:
        reasons = _reasons(spool)
        assert emitter.set_aside == 3 and set(reasons) == {"cut", "list", "moved"}
        assert reasons["cut"].startswith("not JSON")
        assert "not a JSON object" in reasons["list"]
        assert "is not the row's" in reasons["moved"]
        assert emitter.sent == 20
        events = await read_usage(kafka_bootstrap, topic_prefix, 20)  # decodes every envelope
        assert sorted(e.event_id for e in events) == sorted(event_id for event_id, _ in good)
    finally:
        spool.close()


async def _unalign(bootstrap: str, topic: str) -> None:
    """The usage topic refuses messages over 200 kB, as a topic created by hand might."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": "200000"})]
        )
    finally:
        await admin.close()
    await config_when(bootstrap, topic, "max.message.bytes", "200000")


def _big_row(tenant: str) -> tuple[str, bytes]:
    """An event within our envelope cap that the unaligned topic refuses."""
    return spool_row("big", tenant, endpoint="/v1/chat/completions" + "x" * 300_000)


async def test_an_event_an_unaligned_topic_refuses_stays_spooled_until_it_is_aligned(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = USAGE.name(topic_prefix)
    await _unalign(kafka_bootstrap, topic)
    tenant = unique_tenant()
    spool = Spool(tmp_path / "spool")
    big = _big_row(tenant)
    rest = [spool_row(f"r-{i}", tenant) for i in range(30)]
    spool.append([big, *rest])
    async with running_emitter(spool, kafka_bootstrap, topic_prefix) as emitter:
        await until(lambda: emitter.sent == 30, timeout=60, what="the rest to be sent")
        assert emitter.set_aside == 0 and spool.set_aside_count() == 0
        assert [event_id for _, event_id, _ in spool.peek(10)] == [big[0]]
        await ensure_topics(kafka_bootstrap, topic_prefix, [USAGE])  # `allotment create-topics`
        await config_when(kafka_bootstrap, topic, "max.message.bytes", str(USAGE_MAX_MESSAGE_BYTES))
        await until(lambda: len(spool) == 0, timeout=60, what="the big event to be sent")
    try:
        assert emitter.sent == 31 and spool.set_aside_count() == 0
        events = await read_usage(kafka_bootstrap, topic_prefix, 31)
        assert sorted(e.event_id for e in events) == sorted(r[0] for r in [big, *rest])
    finally:
        spool.close()


class _RecordingAsyncio:
    """The emitter module's `asyncio`, noting each backoff-sized sleep in `log`."""

    def __init__(self, log: list[tuple[str, int]]) -> None:
        self._log = log

    async def sleep(self, delay: float) -> None:
        if delay >= 0.2:  # the backoff starts at 0.2 s; the loops' own pauses are shorter
            self._log.append(("backoff", 0))
        await asyncio.sleep(delay)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


class _RecordingSink(UsageSink):
    """Notes each send round in `log` with how many of its rows the topic took."""

    def __init__(self, bootstrap: str, prefix: str, log: list[tuple[str, int]]) -> None:
        super().__init__(bootstrap, prefix)
        self._log = log

    async def send(self, rows: list[tuple[int, str, bytes]]) -> None:
        try:
            await super().send(rows)
        except TopicLimitTooLow as exc:
            self._log.append(("sent", len(rows) - len(exc.event_ids)))
            raise
        except Exception:
            self._log.append(("sent", 0))
            raise
        self._log.append(("sent", len(rows)))


async def test_a_refused_event_does_not_throttle_the_events_behind_it(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, monkeypatch: Any
) -> None:
    await _unalign(kafka_bootstrap, USAGE.name(topic_prefix))
    tenant = unique_tenant()
    spool = Spool(tmp_path / "spool")
    big = _big_row(tenant)
    rest = [spool_row(f"r-{i}", tenant) for i in range(8000)]  # two rounds of up to 5000 rows
    spool.append([big, *rest])
    log: list[tuple[str, int]] = []
    monkeypatch.setattr(emitter_module, "asyncio", _RecordingAsyncio(log))
    sink = _RecordingSink(kafka_bootstrap, topic_prefix, log)
    async with running_emitter(spool, kafka_bootstrap, topic_prefix, sink) as emitter:
        await until(lambda: emitter.sent == 8000, timeout=120, what="the rest to be sent")
        # then the refused event alone, on its own timer
        await until(lambda: log.count(("sent", 0)) >= 2, timeout=30, what="its retries")
    try:
        assert emitter.set_aside == 0
        assert [event_id for _, event_id, _ in spool.peek(10)] == [big[0]]
        sending = [n for what, n in log if what == "sent" and n]
        assert len(sending) >= 2 and sum(sending) == 8000
        after_a_send = [
            i for i, entry in enumerate(log) if entry[0] == "backoff" and log[i - 1][1] > 0
        ]
        assert after_a_send == [], f"backed off after a round that sent rows: {log}"
    finally:
        spool.close()
