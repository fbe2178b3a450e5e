"""An output the broker refuses is never lost: the worker stops before it commits the input.

Faust's `topic.send` only queues a record; a delivery that fails later is logged, and the flush
before an offset commit does not fail for it. Here one output topic refuses records above a
size, so a send fails at the broker. The worker must exit (status 70, as for any record it
must read again) instead of committing the offsets of what it read; once the topic takes the
record again, the restarted worker makes the output again.
- charges (sent by the resolve agent, which awaits its sends): every event charged once;
- policies (a table changelog, sent by Faust): the hard stop reaches the policies topic.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    period_totals,
    policies,
    publish_budgets,
    send_usage,
    usage,
    wait_for,
)

from schemas.topics import CHARGES, POLICIES

BROKER_DEFAULT = "1048588"  # max.message.bytes of a topic without an override


async def _max_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": value})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def test_a_refused_charge_stops_the_worker_and_is_charged_after_the_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant, budget_id = "refused-co", "refused-all"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, budget_id, {"name": "all", "limits": {"total_tokens": 10**12}})],
    )
    charges = CHARGES.name(topic_prefix)
    await _max_message_bytes(kafka_bootstrap, charges, "600")
    at = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    events = [usage(f"rf-{i}", tenant, at, 100 + i, 10) for i in range(200)]
    truth = sum(e["input_uncached"] + e["output"] for e in events)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, events, size=50)

        async def exited() -> bool:
            return not worker.alive()

        await wait_for(exited, 120, every=0.5)
        assert worker.proc is not None and worker.proc.returncode == 70, worker.log_tail()

        await _max_message_bytes(kafka_bootstrap, charges, BROKER_DEFAULT)
        assert worker.revive()

        async def charged() -> dict[str, int]:
            found = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
            if budget_id not in found:
                return {}
            totals = period_totals(found[budget_id], "2026-11")
            return totals if totals.get("events", 0) >= len(events) else {}

        totals = await wait_for(charged, 120, [worker])
        assert (totals["events"], totals["total"]) == (len(events), truth)
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_a_refused_policy_stops_the_worker_and_is_published_after_the_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant, budget_id = "refused-pol", "refused-stop"
    spec = {"name": "stop", "limits": {"total_tokens": 1000}, "at_limit": "hard_stop"}
    await publish_budgets(kafka_bootstrap, topic_prefix, [budget_event(tenant, budget_id, spec)])
    topic = POLICIES.name(topic_prefix)
    await _max_message_bytes(kafka_bootstrap, topic, "100")  # a PolicyChanged is larger
    at = datetime.now(UTC)
    events = [usage(f"rp-{i}", tenant, at, 300, 100) for i in range(3)]  # 1200 of 1000
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, events)

        async def exited() -> bool:
            return not worker.alive()

        await wait_for(exited, 120, every=0.5)
        assert worker.proc is not None and worker.proc.returncode == 70, worker.log_tail()
        assert not [p for p in await policies(kafka_bootstrap, topic_prefix)]

        await _max_message_bytes(kafka_bootstrap, topic, BROKER_DEFAULT)
        assert worker.revive()

        async def stopped() -> list[dict]:
            found = await policies(kafka_bootstrap, topic_prefix)
            return [p for p in found if p["budget_id"] == budget_id and p["policy"] == "hard_stop"]

        await wait_for(stopped, 120, [worker])
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
