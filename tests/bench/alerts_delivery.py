"""Alerts end to end: N threshold crossings on Kafka -> outbox -> a local webhook receiver.

Run: `python tests/bench/alerts_delivery.py [--alerts 2000]` with the stack up. It makes its
own topics (unique prefix) and its own database, and removes both at the end.

Figures: consumer rate (crossings read and enqueued per second, with routing, payload and
one PostgreSQL transaction per batch) and end-to-end delivery rate (signed webhook POSTs
answered and recorded as delivered per second). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fakes import alert_events as ev
from fakes.alerts_harness import SECRET, produce, service, settings, write_config
from fakes.receivers import FakeReceivers
from sqlalchemy import create_engine, make_url, text

from schemas.topics import BUDGETS, THRESHOLDS
from services.common.db import migrate
from services.common.kafka import ensure_topics
from services.common.settings import StackSettings


def counts(url: str, prefix: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE state = 'delivered') "
                    "FROM alert_outbox WHERE source = :s"
                ),
                {"s": prefix},
            ).one()
            return int(row[0]), int(row[1])
    finally:
        engine.dispose()


async def bench(stack: StackSettings, url: str, n: int) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, prefix)
    budgets = (n + 2) // 3  # three distinct thresholds per budget: n distinct dedupe keys
    events = [(BUDGETS, ev.budget(tenant, f"{tenant}-{i}")) for i in range(budgets)]
    events += [
        (THRESHOLDS, ev.crossed(tenant, f"{tenant}-{i // 3}", (75, 90, 100)[i % 3]))
        for i in range(n)
    ]
    await produce(stack.kafka_bootstrap, prefix, events)
    with tempfile.TemporaryDirectory() as tmp, FakeReceivers(SECRET) as rx:
        path = write_config(
            Path(tmp) / "alerts.yaml", tenant, rx.url, channels=("hook",), batch_size=50
        )
        started = time.perf_counter()
        enqueued_at = delivered_at = None
        async with service(settings(stack.kafka_bootstrap, url, prefix, path)):
            deadline = started + 300
            while delivered_at is None:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"not all delivered in 300 s: {counts(url, prefix)}")
                total, delivered = await asyncio.to_thread(counts, url, prefix)
                now = time.perf_counter()
                if enqueued_at is None and total >= n:
                    enqueued_at = now
                if delivered >= n:
                    delivered_at = now
                await asyncio.sleep(0.05)
        processed = len(rx.webhooks_processed)
    enqueue_s = (enqueued_at or 0) - started
    deliver_s = delivered_at - started
    return {
        "alerts": n,
        "budgets": budgets,
        "enqueue_seconds": round(enqueue_s, 2),
        "enqueued_per_second": round(n / enqueue_s, 1),
        "end_to_end_seconds": round(deliver_s, 2),
        "delivered_per_second": round(n / deliver_s, 1),
        "receiver_processed": processed,
        "load_avg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    args = parser.parse_args()
    stack = StackSettings.from_env()
    name = f"allotment_bench_{uuid.uuid4().hex[:8]}"
    server = create_engine(stack.database_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(stack.database_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        figures = asyncio.run(bench(stack, url, args.alerts))
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
