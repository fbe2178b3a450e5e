"""Quiet hours hold, the minimum interval suppresses, and neither touches an urgent alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes import alert_events as ev
from fakes.alerts_harness import SECRET, produce, service, settings, until, write_config
from fakes.receivers import FakeReceivers
from sqlalchemy import create_engine, text

from schemas.topics import BUDGETS, THRESHOLDS


def rows(database_url: str, prefix: str) -> dict[str, tuple[str, datetime, str | None]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            result = conn.execute(
                text(
                    "SELECT discriminator, state, next_attempt_at, last_error FROM alert_outbox "
                    "WHERE source = :s"
                ),
                {"s": prefix},
            )
            return {r[0]: (r[1], r[2], r[3]) for r in result}
    finally:
        engine.dispose()


async def test_quiet_hours_hold_min_interval_suppresses_urgent_goes_through(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    quiet = {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), "timezone": "UTC"}
    events = [
        (BUDGETS, ev.budget(tenant, leaf)),
        (THRESHOLDS, ev.crossed(tenant, leaf, 75, crossed_at=now - timedelta(minutes=5))),
        (THRESHOLDS, ev.crossed(tenant, leaf, 90, crossed_at=now - timedelta(minutes=2))),
        (THRESHOLDS, ev.crossed(tenant, leaf, 100, crossed_at=now)),
    ]
    with FakeReceivers(SECRET) as rx:
        rule = {"quiet_hours": quiet, "min_interval_seconds": 3600}
        path = write_config(
            tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack",), rule=rule
        )
        await produce(kafka_bootstrap, topic_prefix, events)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:

            def settled() -> bool:
                found = rows(database_url, topic_prefix)
                return len(found) == 3 and found["100:total"][0] == "delivered"

            assert await until(settled, alive=task)
            found = rows(database_url, topic_prefix)
        assert found["75:total"][0] == "pending" and found["75:total"][1] == end
        assert found["90:total"][0] == "suppressed" and "min_interval" in str(found["90:total"][2])
        slack = rx.received("/slack", accepted_only=True)
        assert len(slack) == 1 and "100%" in slack[0].json()["text"]
