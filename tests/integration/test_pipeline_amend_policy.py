"""Budget changes reach the routing policy through a real worker, without new traffic.

- A hard-stopped budget gets no usage (the proxy refuses it), so no charge would re-decide it:
  raising its limit, or switching `at_limit` off `hard_stop`, must lift the stop by itself
  (review B, finding 2; the alert tells the owner to "raise the limit ... to resume now").
- The same when the stop was decided at an event time ahead of the worker's clock (a gateway
  running fast, inside the clock skew allowed): the timer decides no earlier than the stop
  (review 3A, finding 1; it decided at its own clock, was refused, and never tried again).
- A charge resolved before its budget was retired still reaches the ledger; a charge for a
  budget the worker never read goes to the dead-letter topic with its reason (finding 8).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline_harness import (
    Workers,
    budget_event,
    dead_letters,
    delete_prefixed_topics,
    ledgers,
    period_totals,
    policies,
    publish_budgets,
    send_raw,
    send_usage,
    usage,
    wait_for,
)

from schemas.budgets import BudgetAmended, BudgetRetired, BudgetSpec
from schemas.charges import BudgetCharged
from schemas.codec import encode
from schemas.topics import CHARGES
from streams.periods import to_ms

STOP = {"limits": {"total_tokens": 1_000}, "at_limit": "hard_stop"}
AHEAD = timedelta(minutes=4)  # a gateway running fast, inside the 5 minutes of skew allowed


def _amended(tenant: str, budget_id: str, spec: dict[str, Any]) -> BudgetAmended:
    return BudgetAmended(
        budget_id=budget_id, tenant=tenant, revision=2, occurred_at=datetime.now(UTC),
        actor="test", spec=BudgetSpec.model_validate(spec),
    )  # fmt: skip


def _latest(found: list[dict[str, Any]], budget_id: str) -> dict[str, Any] | None:
    mine = [p for p in found if p["budget_id"] == budget_id]
    return mine[-1] if mine else None


async def test_amending_a_hard_stopped_budget_lifts_the_stop_without_traffic(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = f"amend-{uuid.uuid4().hex[:8]}"
    raise_id, switch_id = f"{tenant}/raise", f"{tenant}/switch"
    specs = {raise_id: {"name": "raise", **STOP}, switch_id: {"name": "switch", **STOP}}
    await publish_budgets(
        kafka_bootstrap, topic_prefix, [budget_event(tenant, b, s) for b, s in specs.items()]
    )
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start("w1", "--store", "memory")
        now = datetime.now(UTC)
        await send_usage(
            kafka_bootstrap, topic_prefix, [usage(f"{tenant}-{i}", tenant, now, 400, 100)
                                            for i in range(2)],
        )  # fmt: skip

        async def stopped() -> bool:
            found = await policies(kafka_bootstrap, topic_prefix)
            latest = [_latest(found, b) for b in specs]
            return all(p is not None and p["policy"] == "hard_stop" for p in latest)

        await wait_for(stopped, 90, [worker])
        await publish_budgets(kafka_bootstrap, topic_prefix, [
            _amended(tenant, raise_id, {**specs[raise_id], "limits": {"total_tokens": 100_000}}),
            _amended(tenant, switch_id, {**specs[switch_id], "at_limit": "alert_only"}),
        ])  # fmt: skip

        async def lifted() -> tuple[dict[str, Any], dict[str, Any]] | None:
            found = await policies(kafka_bootstrap, topic_prefix)
            raised, switched = _latest(found, raise_id), _latest(found, switch_id)
            if (
                raised is None
                or switched is None
                or "hard_stop" in (raised["policy"], switched["policy"])
            ):
                return None
            return raised, switched

        raised, switched = await wait_for(lifted, 60, [worker])
        assert (raised["policy"], raised["limit"], raised["consumed"]) == ("allow", 100_000, 1_000)
        assert raised["budget_revision"] == 2
        assert (switched["policy"], switched["at_limit"]) == ("alert_only", "alert_only")
        assert switched["budget_revision"] == 2
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_an_amendment_lifts_a_stop_stamped_ahead_of_the_worker_clock(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = f"skew-{uuid.uuid4().hex[:8]}"
    budget_id = f"{tenant}/raise"
    spec = {"name": "raise", **STOP}
    await publish_budgets(kafka_bootstrap, topic_prefix, [budget_event(tenant, budget_id, spec)])
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start("w1", "--store", "memory")
        at = datetime.now(UTC) + AHEAD
        await send_usage(
            kafka_bootstrap, topic_prefix, [usage(f"{tenant}-{i}", tenant, at, 400, 100)
                                            for i in range(2)],
        )  # fmt: skip

        async def latest(stopped: bool) -> dict[str, Any] | None:
            found = _latest(await policies(kafka_bootstrap, topic_prefix), budget_id)
            return found if found and (found["policy"] == "hard_stop") == stopped else None

        stop = await wait_for(lambda: latest(stopped=True), 90, [worker])
        await publish_budgets(kafka_bootstrap, topic_prefix, [
            _amended(tenant, budget_id, {**spec, "limits": {"total_tokens": 100_000}})
        ])  # fmt: skip
        # Well before the worker's clock reaches the stop's effective time (AHEAD): the old
        # timer never lifted it, a timer waiting for its clock would lift it too late.
        lifted = await wait_for(lambda: latest(stopped=False), 60, [worker])
        assert (lifted["policy"], lifted["limit"], lifted["consumed"]) == ("allow", 100_000, 1_000)
        assert lifted["budget_revision"] == 2
        assert _at(lifted["effective_at"]) > _at(stop["effective_at"])  # consumers take the latest
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_a_charge_in_flight_at_retirement_is_counted_and_an_unknown_one_dead_lettered(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = f"retire-{uuid.uuid4().hex[:8]}"
    old_id, ghost_id = f"{tenant}/old", f"{tenant}/ghost"
    defined = budget_event(tenant, old_id, {"name": "old", "limits": {"total_tokens": 1_000}})
    retired = BudgetRetired(
        budget_id=old_id, tenant=tenant, revision=2, occurred_at=datetime.now(UTC), actor="test"
    )
    await publish_budgets(kafka_bootstrap, topic_prefix, [defined, retired])
    now = datetime.now(UTC)

    def charge(budget_id: str) -> tuple[bytes, bytes]:
        # What resolve emitted while the budget was live (source offset 5 of partition 0).
        wire = BudgetCharged(budget_id=budget_id, tenant=tenant, source_partition=0,
                             lines=[[5, 0, to_ms(now), 500, 200]])  # fmt: skip
        return budget_id.encode(), encode(wire)

    await send_raw(kafka_bootstrap, CHARGES.name(topic_prefix), [charge(old_id), charge(ghost_id)])
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start("w1", "--store", "memory")
        period = now.strftime("%Y-%m")

        async def counted() -> dict[str, int] | None:
            found = (await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")).get(old_id)
            return None if found is None else period_totals(found, period)

        totals = await wait_for(counted, 90, [worker])
        assert (totals["input"], totals["output"], totals["total"]) == (500, 200, 700)

        async def dead_lettered() -> list[dict[str, Any]]:
            found = await dead_letters(kafka_bootstrap, topic_prefix)
            return [letter for letter in found if ghost_id in letter["reason"]]

        (letter,) = await wait_for(dead_lettered, 60, [worker])
        assert letter["topic"] == CHARGES.name(topic_prefix)
        assert not [p for p in await policies(kafka_bootstrap, topic_prefix)
                    if p["budget_id"] == old_id]  # fmt: skip
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
