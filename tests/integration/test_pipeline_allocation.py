"""Effective limits reach the worker's ledger and policy stages (issue 4).

A child draws from its parent's overflow pool before the worker starts (so the worker must read
`budget-events` to its end before charging): its crossings fire against the raised limit and
carry `effective_limit` != `limit`, and the hard stop comes at the raised line. A second draw,
made while the worker runs, lifts the hard stop without any new traffic.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    policies,
    publish_allocation,
    publish_budgets,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

from schemas.allocation import OverflowDrawn
from schemas.budgets import Period
from streams.periods import period_of


def _drawn(tenant: str, child: str, parent: str, draw_id: str, tokens: int) -> OverflowDrawn:
    now = datetime.now(UTC)
    return OverflowDrawn(
        tenant=tenant,
        occurred_at=now,
        actor="test",
        draw_id=draw_id,
        budget_id=child,
        parent_id=parent,
        period_key=period_of(Period(), now).key,
        tokens=tokens,
    )


async def test_an_overflow_draw_raises_the_line_the_ledger_and_policy_apply(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    tenant = f"t{run}"
    parent, child = f"{tenant}/org", f"{tenant}/search"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_event(tenant, parent, {"name": "org", "limits": {"total_tokens": 10_000}}),
            budget_event(
                tenant,
                child,
                {
                    "name": "search",
                    "limits": {"total_tokens": 1_000},
                    "parent": parent,
                    "overflow_cap_tokens": 2_000,
                    "selector": {"feature": ["search"]},
                    "at_limit": "hard_stop",
                },
            ),
        ],
    )
    await publish_allocation(
        kafka_bootstrap, topic_prefix, _drawn(tenant, child, parent, "d1", 1_000)
    )
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    worker = workers.start("w1", "--store", "memory")
    try:
        now = datetime.now(UTC)
        # 1600 of the child's 2000: 75% of the effective limit, 160% of the spec's.
        first = [usage(f"{run}-a{i}", tenant, now, 400, 0, feature="search") for i in range(4)]
        await send_usage(kafka_bootstrap, topic_prefix, first)

        async def crossings_of_child() -> list[dict]:
            found = await thresholds(kafka_bootstrap, topic_prefix)
            return [c for c in found if c.get("budget_id") == child]

        (crossing,) = await wait_for(crossings_of_child, timeout=90, workers=[worker])
        assert crossing["threshold"] == 75
        assert (crossing["limit"], crossing["effective_limit"]) == (1_000, 2_000)
        child_policies = [
            p for p in await policies(kafka_bootstrap, topic_prefix) if p["budget_id"] == child
        ]
        assert not [p for p in child_policies if p["policy"] == "hard_stop"]

        # To 2000: the hard stop comes at the effective line, and says so.
        second = [usage(f"{run}-b{i}", tenant, now, 200, 0, feature="search") for i in range(2)]
        await send_usage(kafka_bootstrap, topic_prefix, second)

        async def stopped() -> list[dict]:
            found = await policies(kafka_bootstrap, topic_prefix)
            return [p for p in found if p["budget_id"] == child and p["policy"] == "hard_stop"]

        (stop,) = await wait_for(stopped, timeout=90, workers=[worker])
        assert (stop["limit"], stop["consumed"]) == (2_000, 2_000)
        found = {c["threshold"]: c for c in await crossings_of_child()}
        assert set(found) == {75, 90, 100}
        assert found[100]["consumed"] == 2_000 and found[100]["effective_limit"] == 2_000

        # A draw while stopped: no traffic arrives, yet the stop lifts at the new line.
        await publish_allocation(
            kafka_bootstrap, topic_prefix, _drawn(tenant, child, parent, "d2", 1_000)
        )

        async def lifted() -> dict | None:
            found = await policies(kafka_bootstrap, topic_prefix)
            mine = [p for p in found if p["budget_id"] == child]
            return mine[-1] if mine and mine[-1]["policy"] != "hard_stop" else None

        latest = await wait_for(lifted, timeout=60, workers=[worker])
        assert latest["limit"] == 3_000
        assert latest["policy"] == "allow"
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
