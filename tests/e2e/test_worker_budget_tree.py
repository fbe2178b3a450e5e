"""End to end: a tenant's three-level budget tree through a real `allotment worker`.

Each 75/90/100 crossing appears exactly once on the thresholds topic, and the policies topic ends
with degrade_route from 90 percent and hard_stop at 100 for the budgets configured that way. The
expected numbers are summed here from the produced events, not by the ledger fold.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    expected_crossings,
    ledgers,
    policies,
    publish_budgets,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

TENANT = "tree-co"
PERIOD = "2026-11"
LIMITS = {"tree-org": 300_000, "tree-support": 150_000, "tree-copilot": 60_000}


async def test_tree_crossings_fire_once_and_policies_follow(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_event(TENANT, "tree-org", {
                "name": "org", "limits": {"total_tokens": LIMITS["tree-org"]},
                "at_limit": "hard_stop", "degrade": {"target_model": "small"},
            }),
            budget_event(TENANT, "tree-support", {
                "name": "support", "parent": "tree-org", "selector": {"team": ["support"]},
                "limits": {"total_tokens": LIMITS["tree-support"]},
                "at_limit": "hard_stop", "degrade": {"target_model": "small", "start_percent": 90},
            }),
            budget_event(TENANT, "tree-copilot", {
                "name": "copilot", "parent": "tree-support",
                "selector": {"team": ["support"], "feature": ["copilot"]},
                "limits": {"total_tokens": LIMITS["tree-copilot"]}, "at_limit": "alert_only",
            }),
        ],
    )  # fmt: skip
    at = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
    events = []
    for i in range(4000):
        team = "support" if i % 2 else "sales"
        feature = "copilot" if i % 4 == 1 else "search"
        events.append(usage(f"tree-{i}", TENANT, at, 60, 30, team=team, feature=feature))
    truth = {
        "tree-org": sum(90 for _ in events),
        "tree-support": sum(90 for e in events if e["team"] == "support"),
        "tree-copilot": sum(
            90 for e in events if e["team"] == "support" and e["feature"] == "copilot"
        ),
    }
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        for start in range(0, len(events), 500):  # several sends: crossings happen mid-stream
            await send_usage(kafka_bootstrap, topic_prefix, events[start : start + 500], size=100)

        async def settled() -> bool:
            found = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
            got = {b: found.get(b, {}).get("state", {}).get("periods", {}) for b in truth}
            return all(got[b].get(PERIOD, {}).get("total") == truth[b] for b in truth)

        await wait_for(settled, 120, [worker])
        expected = expected_crossings(truth, LIMITS)
        assert len(expected) == 9  # every budget passes 100 percent with these limits

        async def all_crossings() -> list[dict[str, object]]:
            found = await thresholds(kafka_bootstrap, topic_prefix)
            return found if len(found) >= len(expected) else []

        crossed = await wait_for(all_crossings, 60, [worker])
        counts = Counter((c["budget_id"], c["threshold"]) for c in crossed)
        assert set(counts) == expected
        assert all(n == 1 for n in counts.values()), counts
        assert all(c["period_key"] == PERIOD and c["tenant"] == TENANT for c in crossed)

        published = await policies(kafka_bootstrap, topic_prefix)
        latest = {p["budget_id"]: p for p in published}
        seen = {(p["budget_id"], p["policy"]) for p in published}
        assert latest["tree-org"]["policy"] == "hard_stop"
        assert latest["tree-support"]["policy"] == "hard_stop"
        assert latest["tree-copilot"]["policy"] == "alert_only"
        assert ("tree-org", "degrade_route") in seen
        assert ("tree-support", "degrade_route") in seen
        assert latest["tree-org"]["reset_at"].startswith("2026-12-01T00:00:00")
        assert latest["tree-support"]["target_model"] is None
        degrade = next(p for p in published if p["policy"] == "degrade_route")
        assert degrade["target_model"] == "small"
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
