"""Each spool row travels on its own merits (review 3B, findings 5 and 6).

Finding 6: spooled bytes went into envelopes unparsed, so one corrupt row turned its whole
envelope (up to 500 events of any tenant) into invalid JSON that the pipeline dead-letters as one
record. Now a row that is not a usage event is set aside with its reason and the rest drain.

Finding 5: an event within our envelope cap that a topic never aligned refuses was set aside as
"too large" for good. Now it stays spooled (the rest is sent and deleted) until the topic is
aligned, and then it is sent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from fakes.kafka_io import config_when
from fakes.proxy_harness import read_usage, unique_tenant, until
from spool_support import running_emitter, spool_row

from schemas.topics import USAGE, USAGE_MAX_MESSAGE_BYTES
from services.common.kafka import ensure_topics
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


async def test_an_event_an_unaligned_topic_refuses_stays_spooled_until_it_is_aligned(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    topic = USAGE.name(topic_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": "200000"})]
        )
    finally:
        await admin.close()
    await config_when(kafka_bootstrap, topic, "max.message.bytes", "200000")
    tenant = unique_tenant()
    spool = Spool(tmp_path / "spool")
    big = spool_row("big", tenant, endpoint="/v1/chat/completions" + "x" * 300_000)  # < our cap
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
