"""The dedupe index on disk (`--store rocksdb`): duplicates are dropped across a kill -9 restart
and across partitions that move to another worker and back.

Duplicates are the same events published again at new offsets, after the index that saw them
first was closed (a crash) or its partition was revoked. Expected numbers are summed here from
the produced events; a duplicate let through would add its tokens a second time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pipeline_harness import (
    WorkerProcess,
    Workers,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    publish_budgets,
    send_usage,
    usage,
    wait_for,
)

from schemas.topics import USAGE

AT = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
STORE = ("--store", "rocksdb")


def _events(tenant: str, name: str, first: int, count: int) -> list[dict[str, Any]]:
    return [usage(f"{name}-{i}", tenant, AT, 10 + i % 7, 3 + i % 5)
            for i in range(first, first + count)]  # fmt: skip


async def _applied(
    bootstrap: str, prefix: str, budget_id: str, events: list[dict[str, Any]],
    workers: list[WorkerProcess],
) -> dict[str, int]:  # fmt: skip
    """The ledger's period once it counted every distinct event (or the wait's failure)."""

    async def done() -> dict[str, int]:
        found = await ledgers(bootstrap, f"{prefix}.pipeline")
        period = found.get(budget_id, {}).get("state", {}).get("periods", {}).get("2026-11", {})
        return dict(period) if period.get("events", 0) >= len(events) else {}

    return await wait_for(done, 120, workers)


async def _committed_everything(bootstrap: str, prefix: str, workers: list[WorkerProcess]) -> None:
    """Wait until the group committed the whole usage topic: the records read before a kill or
    a move are then never read again, so only the restored index can know their ids."""
    topic = USAGE.name(prefix)
    tps = [TopicPartition(topic, p) for p in range(USAGE.partitions)]

    async def committed() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await admin.start()
        await consumer.start()
        try:
            done = await admin.list_consumer_group_offsets(f"{prefix}.pipeline")
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
            await admin.close()
        return all(ends[tp] == 0 or (tp in done and done[tp].offset >= ends[tp]) for tp in tps)

    await wait_for(committed, 60, workers)


def _owned(worker: WorkerProcess) -> list[int] | None:
    """The usage partitions of the worker's latest dedupe restore (its log says)."""
    owned = None
    for line in worker.log_path.read_bytes().splitlines():
        if b"dedupe index restored" in line:
            owned = list(orjson.loads(line)["partitions"])
    return owned


async def _owning(worker: WorkerProcess, check: Any, workers: list[WorkerProcess]) -> None:
    async def done() -> bool:
        owned = _owned(worker)
        return owned is not None and bool(check(owned))

    await wait_for(done, 90, workers)


def _total(events: list[dict[str, Any]]) -> int:
    return sum(int(e["input_uncached"]) + int(e["output"]) for e in events)


async def test_duplicates_after_a_kill_9_restart_are_dropped(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "dd-restart-co"
    await publish_budgets(kafka_bootstrap, topic_prefix,
                          [budget_event(tenant, "ddr-all", {"name": "all",
                                        "limits": {"total_tokens": 10**12}})])  # fmt: skip
    first = _events(tenant, "ddr", 0, 3000)
    second = _events(tenant, "ddr", 3000, 1000)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start("w1", *STORE, "--instance-id", "ddr-1")
        await send_usage(kafka_bootstrap, topic_prefix, first, size=200)
        await _applied(kafka_bootstrap, topic_prefix, "ddr-all", first, [worker])
        await _committed_everything(kafka_bootstrap, topic_prefix, [worker])
        worker.kill()
        worker = workers.start("w1", *STORE, "--instance-id", "ddr-1")
        # Every fifth event of the first run again (new offsets), then new events.
        await send_usage(kafka_bootstrap, topic_prefix, first[::5] + second, size=150)
        everything = first + second
        period = await _applied(kafka_bootstrap, topic_prefix, "ddr-all", everything, [worker])
        assert period["events"] == len(everything)
        assert period["total"] == _total(everything)
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_a_partition_that_moves_away_and_back_keeps_dropping_duplicates(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "dd-move-co"
    await publish_budgets(kafka_bootstrap, topic_prefix,
                          [budget_event(tenant, "ddm-all", {"name": "all",
                                        "limits": {"total_tokens": 10**12}})])  # fmt: skip
    first = _events(tenant, "ddm", 0, 2000)
    second = _events(tenant, "ddm", 2000, 1000)
    third = _events(tenant, "ddm", 3000, 1000)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        one = workers.start("w1", *STORE, "--instance-id", "ddm-1")
        await send_usage(kafka_bootstrap, topic_prefix, first, size=200)
        await _applied(kafka_bootstrap, topic_prefix, "ddm-all", first, [one])
        await _committed_everything(kafka_bootstrap, topic_prefix, [one])
        # A second worker takes some partitions: its index starts from their dedupe records.
        two = workers.start("w2", *STORE, "--instance-id", "ddm-2")
        await _owning(two, lambda owned: 0 < len(owned) < 6, [one, two])
        await _owning(one, lambda owned: len(owned) < 6, [one, two])
        await send_usage(kafka_bootstrap, topic_prefix, first[::4] + second, size=150)
        seen = first + second
        await _applied(kafka_bootstrap, topic_prefix, "ddm-all", seen, [one, two])
        await _committed_everything(kafka_bootstrap, topic_prefix, [one, two])
        # It leaves: the first worker gets its partitions back, with the batches it missed.
        two.stop()
        await _owning(one, lambda owned: len(owned) == 6, [one])
        await send_usage(kafka_bootstrap, topic_prefix, second[::3] + first[1::4] + third,
                         size=150)  # fmt: skip
        everything = seen + third
        period = await _applied(kafka_bootstrap, topic_prefix, "ddm-all", everything, [one])
        assert period["events"] == len(everything)
        assert period["total"] == _total(everything)
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
