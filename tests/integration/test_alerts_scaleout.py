"""Two alerts services on one prefix: both consume everything, each alert is sent once.

The second consumer's inserts hit the dedupe key; the two delivery loops split the rows with
`FOR UPDATE SKIP LOCKED`. No crash here, so no repeat on the wire either.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fakes import alert_events as ev
from fakes.alerts_harness import SECRET, produce, service, settings, until, write_config
from fakes.receivers import FakeReceivers
from sqlalchemy import create_engine, text

from schemas.topics import BUDGETS, THRESHOLDS


def delivered(database_url: str, prefix: str) -> tuple[int, int]:
    engine = create_engine(database_url)
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


async def test_two_services_deliver_each_alert_once(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    budgets = [f"{tenant}-b{i}" for i in range(10)]
    events = [(BUDGETS, ev.budget(tenant, b)) for b in budgets]
    events += [(THRESHOLDS, ev.crossed(tenant, b, t)) for t in (75, 90, 100) for b in budgets]
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("hook",))
        alerts = settings(kafka_bootstrap, database_url, topic_prefix, path)
        await produce(kafka_bootstrap, topic_prefix, events)
        async with service(alerts) as one, service(alerts) as two:
            assert await until(lambda: delivered(database_url, topic_prefix) == (30, 30), alive=one)
            assert not two.done()
        hooks = rx.received("/webhook", accepted_only=True)
        assert len(hooks) == 30 and len({h.headers["webhook-id"] for h in hooks}) == 30
