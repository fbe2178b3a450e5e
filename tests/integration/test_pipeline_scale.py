"""Scale-out and replay: two workers share the partitions; a fresh group rebuilds from zero.

The results are read from Kafka: the ledger changelog of each consumer group, the thresholds
topic and the policies topic. Expected numbers are summed here from the produced events.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    expected_crossings,
    latest_by_key,
    ledgers,
    metrics_port,
    policies,
    publish_budgets,
    read_all,
    scrape,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

from schemas.topics import POLICIES

PERIOD = "2026-11"


def _scenario(tenant: str, n: int) -> tuple[list[dict], dict[str, int], dict[str, int], list]:
    start = datetime(2026, 11, 12, tzinfo=UTC)
    events = [
        usage(
            f"{tenant}-{i}", tenant, start + timedelta(seconds=i), 20 + i % 13, 5 + i % 3,
            team=("a", "b", "c")[i % 3], request_model=("big", "small")[i % 2],
        )
        for i in range(n)
    ]  # fmt: skip

    def total(e: dict) -> int:
        return int(e["input_uncached"]) + int(e["output"])

    truth = {
        f"{tenant}-all": sum(total(e) for e in events),
        f"{tenant}-team-a": sum(total(e) for e in events if e["team"] == "a"),
        f"{tenant}-big": sum(total(e) for e in events if e["request_model"] == "big"),
    }
    limits = {b: t * 9 // 10 for b, t in truth.items()}
    budgets = [
        budget_event(tenant, f"{tenant}-all", {
            "name": "all", "limits": {"total_tokens": limits[f"{tenant}-all"]},
            "at_limit": "hard_stop", "degrade": {"target_model": "small"},
        }),
        budget_event(tenant, f"{tenant}-team-a", {
            "name": "team a", "selector": {"team": ["a"]},
            "limits": {"total_tokens": limits[f"{tenant}-team-a"]}, "at_limit": "hard_stop",
        }),
        budget_event(tenant, f"{tenant}-big", {
            "name": "big model", "selector": {"model": ["big"]},
            "limits": {"total_tokens": limits[f"{tenant}-big"]}, "at_limit": "alert_only",
        }),
    ]  # fmt: skip
    return events, truth, limits, budgets


def _totals(found: dict[str, dict]) -> dict[str, int]:
    return {b: v["state"]["periods"].get(PERIOD, {}).get("total", 0) for b, v in found.items()}


async def test_two_workers_share_partitions_with_the_same_result(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    events, truth, limits, budgets = _scenario("scale", 20_000)
    await publish_budgets(kafka_bootstrap, topic_prefix, budgets)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        one = workers.start("w1", "--instance-id", "scale-1")
        two = workers.start("w2", "--instance-id", "scale-2")

        async def both_ready() -> bool:
            return all(
                "Worker ready" in w.log_path.read_text(errors="replace") and metrics_port(w)
                for w in (one, two)
            )

        await wait_for(both_ready, 90, [one, two])
        for start in range(0, len(events), 1000):
            await send_usage(kafka_bootstrap, topic_prefix, events[start : start + 1000], 250)
            await asyncio.sleep(0.2)

        async def settled() -> bool:
            return _totals(await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")) == truth

        await wait_for(settled, 180, [one, two], every=2)
        counts = Counter(
            (c["budget_id"], c["threshold"])
            for c in await thresholds(kafka_bootstrap, topic_prefix)
        )
        assert set(counts) == expected_crossings(truth, limits)
        assert all(n == 1 for n in counts.values()), counts
        # Both workers took part: each read usage events.
        assert scrape(one)["allotment_worker_events_in_total"] > 0
        assert scrape(two)["allotment_worker_events_in_total"] > 0
        assert (
            scrape(one)["allotment_worker_events_in_total"]
            + scrape(two)["allotment_worker_events_in_total"]
        ) >= len(events)
        latest = {
            p["budget_id"]: p["policy"] for p in await policies(kafka_bootstrap, topic_prefix)
        }
        assert latest == {"scale-all": "hard_stop", "scale-team-a": "hard_stop",
                          "scale-big": "alert_only"}  # fmt: skip
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_a_fresh_group_replays_to_the_same_state(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    events, truth, limits, budgets = _scenario("replay", 10_000)
    await publish_budgets(kafka_bootstrap, topic_prefix, budgets)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        first = workers.start("first")
        await send_usage(kafka_bootstrap, topic_prefix, events, 250)

        async def settled() -> bool:
            return _totals(await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")) == truth

        await wait_for(settled, 120, [first])
        first.stop()
        before = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
        crossings_before = await thresholds(kafka_bootstrap, topic_prefix)
        policy_records = await read_all(kafka_bootstrap, POLICIES.name(topic_prefix))
        policies_before = latest_by_key(policy_records)
        assert len(crossings_before) == len(expected_crossings(truth, limits))

        replay = workers.start("replay", "--group", f"{topic_prefix}.replay")

        async def rebuilt() -> bool:
            return _totals(await ledgers(kafka_bootstrap, f"{topic_prefix}.replay")) == truth

        await wait_for(rebuilt, 120, [replay])
        after = await ledgers(kafka_bootstrap, f"{topic_prefix}.replay")
        for budget_id in truth:
            assert after[budget_id]["state"] == before[budget_id]["state"]
        # Crossings fire once also under replay; the latest policies are the same.
        assert len(await thresholds(kafka_bootstrap, topic_prefix)) == len(crossings_before)
        policies_after = latest_by_key(await read_all(kafka_bootstrap, POLICIES.name(topic_prefix)))
        assert policies_after == policies_before  # nothing republished, not even a flap
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
