"""Warehouse projection throughput: usage envelopes on Kafka -> period and daily read models.

Run: `python tests/bench/warehouse_projection.py [--events 100000] [--budgets 20]` with the
stack up. It makes its own topics (unique prefix) and its own database, and removes both.

Figures: usage events projected per second (decode, match against the budgets, one
`usage_seen` row per event, additive upserts of period and daily totals, offsets in
the same transaction) and the rows written. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import make_url, text

from schemas.budgets import BudgetDefined, BudgetSpec
from schemas.codec import encode
from schemas.topics import ALL, BUDGET_EVENTS, USAGE
from schemas.usage import UsageBatch, UsageRecorded
from services.common.db import make_engine, migrate
from services.common.kafka import ensure_topics, partition_for
from services.common.settings import StackSettings
from services.warehouse.consumer import WarehouseConsumer

TENANT = "bench"
FEATURES = ["search", "chat", "summarise", "translate"]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet"]


def budgets(n: int) -> list[BudgetDefined]:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    result = [
        BudgetDefined(
            budget_id="org", tenant=TENANT, revision=1, occurred_at=at, actor="bench",
            spec=BudgetSpec(name="org", limits={"total_tokens": 10**12}),
        )
    ]  # fmt: skip
    for i in range(n - 1):
        spec = BudgetSpec.model_validate(
            {
                "name": f"b{i}",
                "limits": {"total_tokens": 10**9},
                "parent": "org",
                "selector": {"feature": [FEATURES[i % len(FEATURES)]]},
            }
        )
        result.append(
            BudgetDefined(
                budget_id=f"b{i}", tenant=TENANT, revision=1, occurred_at=at, actor="b", spec=spec
            )
        )
    return result


async def produce(bootstrap: str, prefix: str, events: int, n_budgets: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for event in budgets(n_budgets):
            await producer.send(BUDGET_EVENTS.name(prefix), encode(event), key=TENANT.encode())
        start = datetime(2026, 11, 1, tzinfo=UTC)
        by_partition: dict[int, list[UsageRecorded]] = {}
        for i in range(events):
            at = start + timedelta(seconds=i * 17)
            event = UsageRecorded(
                event_id=f"e{i}", source="bench", occurred_at=at, received_at=at, tenant=TENANT,
                feature=FEATURES[i % len(FEATURES)], request_model=MODELS[i % len(MODELS)],
                input_uncached=100, output=50,
            )  # fmt: skip
            p = partition_for(event.event_id, USAGE.partitions)
            by_partition.setdefault(p, []).append(event)
            if len(by_partition[p]) == 500:
                batch = UsageBatch(events=by_partition.pop(p))
                await producer.send(USAGE.name(prefix), encode(batch), partition=p)
        for p, rest in by_partition.items():
            await producer.send(USAGE.name(prefix), encode(UsageBatch(events=rest)), partition=p)
        await producer.flush()
    finally:
        await producer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--budgets", type=int, default=20)
    args = parser.parse_args()
    settings = StackSettings.from_env()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    name = f"allotment_bench_{uuid.uuid4().hex[:8]}"
    server = make_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(settings.database_url).set(database=name).render_as_string(hide_password=False)
    await ensure_topics(settings.kafka_bootstrap, prefix)
    engine = make_engine(url)
    try:
        migrate(url)
        await produce(settings.kafka_bootstrap, prefix, args.events, args.budgets)
        consumer = WarehouseConsumer(engine, settings.kafka_bootstrap, prefix)
        await consumer.start()
        try:
            began = time.perf_counter()
            records = await consumer.catch_up()
            seconds = time.perf_counter() - began
        finally:
            await consumer.stop()
        with engine.connect() as conn:
            charged = conn.execute(text("SELECT count(*) FROM usage_seen")).scalar_one()
            daily = conn.execute(text("SELECT count(*) FROM daily_usage")).scalar_one()
            total = conn.execute(
                text("SELECT total_tokens FROM period_usage WHERE budget_id = 'org'")
            ).scalar_one()
        if total != args.events * 150:
            raise SystemExit(f"org total {total} != {args.events * 150}")
        rate = args.events / seconds
        print(f"projected {args.events} usage events ({records} Kafka records) in {seconds:.2f}s")
        print(f"  {rate:,.0f} usage events/s; {charged} usage_seen rows, {daily} daily rows")
        print(json.dumps({"bench": "warehouse_projection", "events": args.events,
                          "budgets": args.budgets, "seconds": round(seconds, 3),
                          "events_per_second": round(rate), "charged_rows": charged,
                          "load1": os.getloadavg()[0]}))  # fmt: skip
    finally:
        engine.dispose()
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([spec.name(prefix) for spec in ALL])
        finally:
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
