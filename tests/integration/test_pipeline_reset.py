"""A hard-stopped budget returns to `allow` at its period reset, without any new traffic.

A budget at hard_stop gets no usage (the proxy refuses it), so no charge would ever lift the
stop; the worker's reset timer does. Here the stop belongs to yesterday (UTC), so its reset is
already past when the worker sees it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    policies,
    publish_budgets,
    send_usage,
    usage,
    wait_for,
)


async def test_hard_stop_lifts_at_the_period_reset(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "reset-co"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, "reset-daily", {
            "name": "daily", "limits": {"total_tokens": 1000}, "at_limit": "hard_stop",
            "period": {"kind": "day", "timezone": "UTC"},
        })],
    )  # fmt: skip
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(
            kafka_bootstrap,
            topic_prefix,
            [usage(f"reset-{i}", tenant, yesterday, 200, 100) for i in range(5)],
        )

        async def lifted() -> list[dict]:
            found = await policies(kafka_bootstrap, topic_prefix)
            return found if found and found[-1]["policy"] == "allow" else []

        published = await wait_for(lifted, 90, [worker])
        stop = next(p for p in published if p["policy"] == "hard_stop")
        assert stop["period_key"] == yesterday.date().isoformat()
        assert stop["reset_at"].startswith((yesterday + timedelta(days=1)).date().isoformat())
        allow = published[-1]
        assert allow["period_key"] == datetime.now(UTC).date().isoformat() or (
            allow["period_key"] > stop["period_key"]
        )
        assert allow["consumed"] == 0
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
