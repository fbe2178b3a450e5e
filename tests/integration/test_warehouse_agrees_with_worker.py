"""A real worker and the warehouse read the same usage topic and count the same tokens.

One envelope holds good events, one event that breaks the contract (stamped more than a day,
`MAX_AHEAD`, after its receipt) and one whose id hashes to another usage partition; a second
holds good events and one misrouted event only. The worker charges the good events and
dead-letters the other two; the warehouse projection, reading the same records, must count
exactly the tokens the worker's ledger holds, per budget and period. Before both read usage
through `schemas.codec.UsageReader`, the warehouse dropped the first envelope whole and counted
the misrouted events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from api_harness import unique
from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    period_totals,
    publish_budgets,
    read_all,
    send_raw,
    usage,
    wait_for,
)
from sqlalchemy import select
from test_warehouse_history import id_on

from schemas.codec import encode
from schemas.topics import BUDGET_EVENTS, DEAD_LETTER, USAGE
from services.common.db import make_engine
from services.warehouse import tables as t
from services.warehouse.consumer import WarehouseConsumer


async def send_envelope(bootstrap: str, topic: str, partition: int, events: list[Any]) -> None:
    """One envelope onto `partition`, as a producer that packs (or misroutes) it would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        value = orjson.dumps({"type": "UsageBatch", "version": 1, "events": events})
        await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def test_the_warehouse_counts_the_tokens_the_worker_charges(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, budget_id = unique("agree"), unique("agree-month")
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.strftime("%Y-%m")
    defined = budget_event(tenant, budget_id, {
        "name": "month", "limits": {"total_tokens": 10**9},
        "period": {"kind": "month", "timezone": "UTC"},
    })  # fmt: skip
    await publish_budgets(kafka_bootstrap, topic_prefix, [defined])  # the worker's table
    await send_raw(  # the warehouse's history (the API writes both)
        kafka_bootstrap, BUDGET_EVENTS.name(topic_prefix), [(tenant.encode(), encode(defined))]
    )
    skewed = usage(id_on(2, "skewed"), tenant, now + timedelta(days=2), 1000, 1000)
    skewed["received_at"] = now.isoformat()
    first = [
        usage(id_on(2, "good"), tenant, now, 100, 10),
        skewed,
        usage(id_on(3, "misrouted"), tenant, now, 2000, 2000),
        usage(id_on(2, "good"), tenant, now, 200, 20),
    ]
    second = [
        usage(id_on(5, "good"), tenant, now, 300, 30),
        usage(id_on(0, "misrouted"), tenant, now, 4000, 4000),
    ]
    topic = USAGE.name(topic_prefix)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    engine = make_engine(database_url)
    try:
        await send_envelope(kafka_bootstrap, topic, 2, first)
        await send_envelope(kafka_bootstrap, topic, 5, second)
        worker = workers.start()
        expected = 100 + 10 + 200 + 20 + 300 + 30

        async def charged() -> dict[str, int] | None:
            ledger = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")).get(budget_id)
            totals = None if ledger is None else period_totals(ledger, month)
            return totals if totals and totals["total"] >= expected else None  # all batches in

        totals = await wait_for(charged, 120, [worker])

        async def dead_letters() -> list[Any] | None:
            found = await read_all(kafka_bootstrap, DEAD_LETTER.name(topic_prefix))
            return found if len(found) >= 3 else None

        dead = await wait_for(dead_letters, 60, [worker])
        reasons = sorted(orjson.loads(d.value)["errors"][0].split(":")[0] for d in dead)
        assert reasons == ["event_id", "event_id", "occurred_at"]
        assert totals["total"] == expected  # the worker: good events only

        consumer = WarehouseConsumer(engine, kafka_bootstrap, topic_prefix)
        await consumer.start()
        try:
            await consumer.catch_up()
        finally:
            await consumer.stop()
        with engine.connect() as conn:
            row = conn.execute(
                select(t.period_usage).where(t.period_usage.c.budget_id == budget_id)
            ).mappings().one()  # fmt: skip
        assert row["period_key"] == month
        projected = {
            "input": row["input_tokens"], "output": row["output_tokens"],
            "total": row["total_tokens"],
        }  # fmt: skip
        assert projected == {k: totals[k] for k in ("input", "output", "total")}
        assert row["events"] == 3
        assert consumer.projector.counts["usage_rejected"] == 3
    finally:
        workers.close()
        engine.dispose()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
