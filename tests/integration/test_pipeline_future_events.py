"""A usage event stamped a year ahead goes to the dead-letter topic; the budget keeps working.

Review B, finding 1, through a real worker: before the fix the event was charged, the ledger's
"now" jumped a year, the current period and its fired thresholds were pruned, and the real
traffic after it was counted late: no 90 or 100 percent crossing, no hard stop.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pipeline_harness import (
    Workers,
    budget_event,
    dead_letters,
    delete_prefixed_topics,
    ledgers,
    period_totals,
    policies,
    publish_budgets,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

from schemas.topics import USAGE

DAY_RULE = "must not be more than 1 day, 0:00:00 after"  # schemas.usage.MAX_AHEAD


async def _hard_stop_month(bootstrap: str, prefix: str, tenant: str, budget_id: str) -> None:
    await publish_budgets(bootstrap, prefix, [budget_event(tenant, budget_id, {
        "name": "month", "limits": {"total_tokens": 1000}, "at_limit": "hard_stop",
        "period": {"kind": "month", "timezone": "UTC"},
    })])  # fmt: skip


async def _stopped(bootstrap: str, prefix: str, budget_id: str) -> dict[str, Any] | None:
    """The budget's latest policy, once it is a hard stop."""
    mine = [p for p in await policies(bootstrap, prefix) if p["budget_id"] == budget_id]
    return mine[-1] if mine and mine[-1]["policy"] == "hard_stop" else None


async def test_a_future_event_is_dead_lettered_and_the_budget_keeps_charging(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant, budget_id = "future-co", "future-month"
    await _hard_stop_month(kafka_bootstrap, topic_prefix, tenant, budget_id)
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.strftime("%Y-%m")
    # A gateway whose clock (or a backfill file's year) is wrong; ingest stamped received_at.
    future = {**usage("future-typo", tenant, now + timedelta(days=365), 1, 0)}
    future["received_at"] = now.isoformat()
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, [usage("fut-0", tenant, now, 400, 400)])

        async def crossed(threshold: int) -> bool:
            found = await thresholds(kafka_bootstrap, topic_prefix)
            return any(
                t["budget_id"] == budget_id and t["period_key"] == month
                and t["threshold"] == threshold
                for t in found
            )  # fmt: skip

        await wait_for(lambda: crossed(75), 90, [worker])
        await send_usage(kafka_bootstrap, topic_prefix, [future])

        letters = partial(dead_letters, kafka_bootstrap, topic_prefix)
        [letter] = await wait_for(letters, 60, [worker])
        assert letter["topic"] == USAGE.name(topic_prefix)
        assert orjson.loads(base64.b64decode(letter["payload_b64"]))["event_id"] == "future-typo"
        [rule] = letter["errors"]
        assert rule.startswith(f"occurred_at: {DAY_RULE} received_at"), rule

        # Real traffic after it is charged to the current period and crosses 90 and 100.
        later = [usage(f"fut-{i}", tenant, now, 50, 50) for i in range(1, 6)]
        await send_usage(kafka_bootstrap, topic_prefix, later)
        await wait_for(lambda: crossed(100), 90, [worker])
        assert await crossed(90)

        async def charged() -> dict[str, int] | None:
            ledger = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")).get(budget_id)
            totals = None if ledger is None else period_totals(ledger, month)
            return totals if totals and totals["total"] == 1300 else None

        await wait_for(charged, 60, [worker])
        ledger = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline"))[budget_id]
        assert list(ledger["state"]["periods"]) == [month]
        assert ledger["state"]["late_events"] == 0

        stop = await wait_for(
            lambda: _stopped(kafka_bootstrap, topic_prefix, budget_id), 60, [worker]
        )
        assert stop["period_key"] == month
        assert worker.alive()
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_an_event_whose_source_also_lied_about_receipt_is_dead_lettered_by_broker_time(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A direct producer that stamps received_at as far ahead as occurred_at passes the
    contract; the worker still refuses it against the record's broker time (`MAX_AHEAD`)."""
    tenant, budget_id = "liar-co", "liar-month"
    await _hard_stop_month(kafka_bootstrap, topic_prefix, tenant, budget_id)
    now = datetime.now(UTC).replace(microsecond=0)
    month = now.strftime("%Y-%m")
    lying = usage("liar-typo", tenant, now + timedelta(days=365), 1, 0)  # received_at as well
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, [lying])

        letters = partial(dead_letters, kafka_bootstrap, topic_prefix)
        [letter] = await wait_for(letters, 60, [worker])
        [rule] = letter["errors"]
        assert rule.startswith(f"occurred_at: {DAY_RULE} the time the broker stored the record")
        await send_usage(kafka_bootstrap, topic_prefix, [usage("liar-0", tenant, now, 600, 500)])

        stop = await wait_for(
            lambda: _stopped(kafka_bootstrap, topic_prefix, budget_id), 90, [worker]
        )
        assert stop["period_key"] == month
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
