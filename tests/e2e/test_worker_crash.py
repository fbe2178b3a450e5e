"""Crash safety: kill -9 the worker at random points while 60,000 usage events flow.

After every kill the worker restarts on the same RocksDB store. At the end each budget's
aggregate equals the sum over the produced events (summed here, independently of the fold), and
each (budget, period, threshold) crossing is on the thresholds topic exactly once.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    expected_crossings,
    ledgers,
    publish_budgets,
    send_usage,
    thresholds,
    usage,
    wait_for,
)

TENANT = "crash-co"
PERIOD = "2026-11"
EVENTS = 60_000
KILLS = 4


def _events(rng: random.Random) -> list[dict[str, object]]:
    start = datetime(2026, 11, 10, tzinfo=UTC)
    events = []
    for i in range(EVENTS):
        team = rng.choice(["support", "sales", "research"])
        at = start + timedelta(seconds=i * 7)
        events.append(
            usage(
                f"crash-{i}", TENANT, at, rng.randint(1, 900), rng.randint(0, 400),
                team=team, feature=rng.choice(["copilot", "search"]),
            )
        )  # fmt: skip
    return events


async def test_kill_9_loses_nothing_and_counts_nothing_twice(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(20261127)
    events = _events(rng)

    def total(e: dict[str, object]) -> int:
        return int(e["input_uncached"]) + int(e["output"])  # type: ignore[call-overload]

    truth = {
        "crash-org": sum(total(e) for e in events),
        "crash-support": sum(total(e) for e in events if e["team"] == "support"),
        "crash-copilot": sum(
            total(e) for e in events if e["team"] == "support" and e["feature"] == "copilot"
        ),
    }
    # Limits put the crossings at different points of the run, so some fall between kills.
    limits = {
        "crash-org": truth["crash-org"] * 2 // 3,
        "crash-support": truth["crash-support"] * 95 // 100,
        "crash-copilot": truth["crash-copilot"] * 8 // 10,
    }
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_event(TENANT, "crash-org", {
                "name": "org", "limits": {"total_tokens": limits["crash-org"]},
                "at_limit": "hard_stop", "degrade": {"target_model": "small"},
            }),
            budget_event(TENANT, "crash-support", {
                "name": "support", "selector": {"team": ["support"]},
                "limits": {"total_tokens": limits["crash-support"]}, "at_limit": "alert_only",
            }),
            budget_event(TENANT, "crash-copilot", {
                "name": "copilot", "selector": {"team": ["support"], "feature": ["copilot"]},
                "limits": {"total_tokens": limits["crash-copilot"]}, "at_limit": "hard_stop",
            }),
        ],
    )  # fmt: skip
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    args = ("--instance-id", "crash-1", "--batch-max", "1500")
    worker = workers.start("w1", *args)
    produced = asyncio.Event()

    async def produce() -> None:
        for start in range(0, EVENTS, 2000):
            await send_usage(kafka_bootstrap, topic_prefix, events[start : start + 2000], 200)
            await asyncio.sleep(rng.uniform(0.1, 0.6))
        produced.set()

    try:
        producer = asyncio.create_task(produce())
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(3.0, 7.0))
            worker.kill()
            worker = workers.start("w1", *args)
        await producer
        assert produced.is_set()

        async def settled() -> bool:
            found = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
            got = {
                b: found.get(b, {}).get("state", {}).get("periods", {}).get(PERIOD, {})
                for b in truth
            }
            return all(got[b].get("total") == truth[b] for b in truth)

        await wait_for(settled, 240, [worker], every=3)
        found = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
        for budget_id, expected_total in truth.items():
            period = found[budget_id]["state"]["periods"][PERIOD]
            assert period["total"] == expected_total
            matching = {
                "crash-org": EVENTS,
                "crash-support": sum(1 for e in events if e["team"] == "support"),
                "crash-copilot": sum(
                    1 for e in events if e["team"] == "support" and e["feature"] == "copilot"
                ),
            }[budget_id]
            assert period["events"] == matching

        expected = expected_crossings(truth, limits)
        crossed = await thresholds(kafka_bootstrap, topic_prefix)
        counts = Counter((c["budget_id"], c["threshold"]) for c in crossed)
        assert set(counts) == expected
        duplicates = {k: n for k, n in counts.items() if n > 1}
        assert not duplicates, duplicates
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
