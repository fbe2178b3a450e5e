"""Redelivery through the whole pipeline: the same records ingested twice are charged once.

A real `allotment worker` process consumes what the ingest service published; the budget's
ledger (read from its changelog topic) must hold each distinct request exactly once. Sentinel
records, one per usage partition, are sent after the redelivered copies: the duplicates sit at
lower offsets of the same partitions, so once every sentinel is charged the duplicates have
been seen too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from ingest_support import kafka_sink, key_ring, serve
from pipeline_harness import (
    WorkerProcess,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    period_totals,
    publish_budgets,
    wait_for,
)

from schemas.topics import USAGE
from services.common.kafka import partition_for
from services.ingest.keys import hash_key
from services.ingest.sources.base import scoped_event_id

KEY = "pipeline-ingest-key"


def _record(request_id: str, tokens: int, now: datetime) -> dict[str, object]:
    return {
        "source_request_id": request_id,
        "occurred_at": now.isoformat(),
        "input_uncached": tokens,
        "cache_read": 1,
        "output": 2,
        "team": "core",
    }


def _sentinels(run: str, tenant: str) -> list[str]:
    """One request id per usage partition."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < USAGE.partitions:
        rid = f"{run}-sentinel-{i}"
        found.setdefault(
            partition_for(scoped_event_id("native", tenant, rid), USAGE.partitions), rid
        )
        i += 1
    return list(found.values())


async def test_redelivered_usage_is_charged_once(kafka_bootstrap, topic_prefix, tmp_path):
    run = uuid.uuid4().hex[:8]
    tenant = f"t{run}"
    now = datetime.now(UTC)
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_event(
                tenant,
                f"{tenant}/core",
                {"name": "core", "selector": {"team": ["core"]}, "limits": {"total_tokens": 10**9}},
            )
        ],
    )
    worker = WorkerProcess(
        topic_prefix,
        tmp_path / "store",
        tmp_path / "worker.log",
        kafka_bootstrap,
        ["--store", "memory"],
    ).start()
    keys = key_ring({"id": "p", "tenant": tenant, "key_sha256": hash_key(KEY)})
    originals = [_record(f"{run}-{i}", 100 * (i + 1), now) for i in range(5)]
    sentinels = [_record(rid, 1, now) for rid in _sentinels(run, tenant)]
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        with serve(keys, kafka_sink(kafka_bootstrap, topic_prefix)) as url:
            async with httpx.AsyncClient(base_url=url) as client:
                for body in (originals, originals[:3], originals[3:], sentinels):
                    response = await client.post("/v1/usage", json=body, headers=headers)
                    assert response.status_code == 200, response.text

        expected_events = len(originals) + len(sentinels)
        period = now.strftime("%Y-%m")

        async def charged() -> dict[str, int] | None:
            ledger = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")).get(
                f"{tenant}/core"
            )
            totals = period_totals(ledger, period) if ledger else None
            return totals if totals and totals.get("events", 0) >= expected_events else None

        totals = await wait_for(charged, timeout=180, workers=[worker])
    finally:
        worker.stop()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)

    input_expected = sum(r["input_uncached"] + r["cache_read"] for r in originals + sentinels)
    output_expected = sum(r["output"] for r in originals + sentinels)
    assert totals["events"] == expected_events
    assert (totals["input"], totals["output"]) == (input_expected, output_expected)
    assert totals["total"] == input_expected + output_expected
