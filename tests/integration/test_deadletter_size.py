"""A poison record over the broker's record limit is dead-lettered cut, and the stream goes on.

The usage record is a few MB of JSON that the broker accepts because the producer compresses it;
its dead letter is sent uncompressed by the worker, so before dead letters were cut the broker
refused it and the worker exited to read the same record again, forever.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    publish_budgets,
    read_all,
    send_usage,
    usage,
    wait_for,
)

from schemas.codec import decode
from schemas.signals import DeadLettered
from schemas.topics import DEAD_LETTER, USAGE
from streams.faust.deadletter import MAX_PAYLOAD_BYTES


async def test_a_huge_poison_record_is_dead_lettered_cut_and_the_stream_goes_on(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "huge-poison-co"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, "huge-all", {"name": "all", "limits": {"total_tokens": 10**9}})],
    )
    at = datetime(2026, 11, 19, 8, 0, tzinfo=UTC)
    topic = USAGE.name(topic_prefix)
    before = [usage(f"huge-a{i}", tenant, at, 11, 1) for i in range(20)]
    after = [usage(f"huge-b{i}", tenant, at, 13, 2) for i in range(20)]
    # 4 MB that gzip packs well (the broker sees the compressed size), its tail past the cut.
    filler = b"a" * 4_000_000 + b"the end, beyond the cut"
    poison = b'{"type":"UsageRecorded","junk":"' + filler + b'"}'
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, before)
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            acks="all",
            compression_type="gzip",
            max_request_size=8 << 20,
        )
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, poison, key=b"huge-poison")
        finally:
            await producer.stop()
        await send_usage(kafka_bootstrap, topic_prefix, after)
        expected = sum(e["input_uncached"] + e["output"] for e in before + after)

        async def applied() -> bool:
            ledger = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")).get("huge-all")
            found = ledger["state"]["periods"].get("2026-11", {}) if ledger else {}
            return found.get("total") == expected

        await wait_for(applied, 120, [worker])

        async def dead() -> list[bytes]:
            return [
                r.value for r in await read_all(kafka_bootstrap, DEAD_LETTER.name(topic_prefix))
            ]

        raw = await wait_for(dead, 30, [worker])
        assert len(raw) == 1
        letter = decode(raw[0])
        assert isinstance(letter, DeadLettered)
        assert (letter.topic, letter.partition, letter.offset) == (
            topic,
            sent.partition,
            sent.offset,
        )
        assert letter.payload_truncated is True
        assert letter.payload_size == len(poison)
        assert letter.payload_sha256 == hashlib.sha256(poison).hexdigest()
        assert base64.b64decode(letter.payload_b64) == poison[:MAX_PAYLOAD_BYTES]
        assert orjson.loads(raw[0])["payload_truncated"] is True
        assert worker.restarts == 0 and worker.alive(), worker.log_tail()
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
