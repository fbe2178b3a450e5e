"""The warehouse counts, event by event, what the worker's resolve stage charges.

An envelope with one bad event used to be dropped whole by the projection (decoded as one
`UsageBatch` model) while the worker dead-lettered only the bad event; an event on the wrong
usage partition was counted by the projection and dead-lettered by the worker. Both now read
usage through `schemas.codec.UsageReader`. These drive the projector against the real
PostgreSQL with record times in 2020 (the usage_seen rows they add are their own).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from api_harness import unique
from sqlalchemy import Engine
from test_warehouse_history import T0, Feed, _budget, id_on, totals

from schemas.topics import USAGE
from services.common.db import make_engine
from services.warehouse import tables as t
from services.warehouse.projector import Projector, Record
from streams.budgets import BudgetIndex
from streams.faust.dedupe_log import MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord

AT = datetime(2020, 3, 1, 9, tzinfo=UTC)


def wire(tenant: str, event_id: str, tokens: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": event_id, "source": "test",
        "occurred_at": AT.isoformat(), "received_at": AT.isoformat(), "tenant": tenant,
        "input_uncached": tokens, "output": tokens, **fields,
    }  # fmt: skip


def envelope(partition: int, offset: int, at_ms: int, *events: dict[str, Any]) -> Record:
    value = orjson.dumps({"type": "UsageBatch", "version": 1, "events": list(events)})
    return Record("usage", "x.usage", partition, offset, value, at_ms)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _project(engine: Engine, projector: Projector, records: list[Record]) -> None:
    with engine.begin() as conn:
        projector.project(conn, records)


def _define_budget(engine: Engine, projector: Projector, tenant: str) -> None:
    """One budget "all-<suffix>" of `tenant` over all its usage, in force from T0."""
    _project(
        engine, projector, [Feed().record("budget-events", _budget(tenant, unique("all"), 1), T0)]
    )


def test_one_invalid_event_leaves_the_rest_of_its_envelope_counted(engine: Engine) -> None:
    tenant = unique("tenant")
    projector = Projector(timedelta(days=7))
    _define_budget(engine, projector, tenant)
    ahead = (AT + timedelta(days=2)).isoformat()  # the contract's MAX_AHEAD rule
    events = [
        wire(tenant, id_on(2), 10),
        wire(tenant, id_on(2), 20, occurred_at=ahead),
        wire(tenant, id_on(2), 30, reasoning=31),  # reasoning above output
        wire(tenant, id_on(2), 40),
    ]
    _project(engine, projector, [envelope(2, 0, T0 + 1, *events)])
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 2 * (10 + 40), 2)]
    assert projector.counts["usage_rejected"] == 2


def test_an_event_on_another_usage_partition_is_not_counted(engine: Engine) -> None:
    tenant = unique("tenant")
    projector = Projector(timedelta(days=7))
    _define_budget(engine, projector, tenant)
    elsewhere = id_on(4)
    records = [
        envelope(1, 0, T0 + 1, wire(tenant, id_on(1), 5), wire(tenant, elsewhere, 100)),
        Record("usage", "x.usage", 1, 1, orjson.dumps(wire(tenant, id_on(4), 1000)), T0 + 2),
    ]
    _project(engine, projector, records)
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 10, 1)]
    assert projector.counts["usage_rejected"] == 2
    # On its own partition the same event counts.
    _project(engine, projector, [envelope(4, 0, T0 + 3, wire(tenant, elsewhere, 100))])
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 210, 2)]


def test_an_event_stamped_days_past_its_broker_time_is_not_counted(engine: Engine) -> None:
    """received_at as far ahead passes the contract, the broker's time does not (the contract's
    fixed `MAX_AHEAD`, as in the worker)."""
    tenant = unique("tenant")
    projector = Projector(timedelta(days=7), broker_times=True)  # as the consumer builds it
    _define_budget(engine, projector, tenant)
    stored = int(AT.timestamp() * 1000)
    ahead = (AT + timedelta(days=2)).isoformat()
    liar = wire(tenant, id_on(3), 50, occurred_at=ahead, received_at=ahead)
    _project(engine, projector, [envelope(3, 0, stored, wire(tenant, id_on(3), 7), liar)])
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 14, 1)]
    assert projector.counts["usage_rejected"] == 1
    assert USAGE.partitions > 4  # the partitions these tests pick exist


def test_an_old_envelope_with_events_minutes_ahead_reads_alike_in_worker_and_warehouse(
    engine: Engine,
) -> None:
    """Replay: an envelope written in 2020 by a gateway 10 minutes fast (accepted and charged
    then) is read by the worker's resolve stage, run with its ledger cap, and counted by the
    warehouse. Before, the contract's 5-minute rule made it unreadable to both on a rebuild,
    and the broker-time rule made the worker's reading depend on its --clock-skew-seconds."""
    tenant = unique("tenant")
    projector = Projector(timedelta(days=7), broker_times=True)
    _define_budget(engine, projector, tenant)
    fast = (AT + timedelta(minutes=10)).isoformat()
    events = [
        wire(tenant, id_on(5), 3, occurred_at=fast),  # ahead of received_at
        wire(tenant, id_on(5), 4, occurred_at=fast, received_at=fast),  # and of the broker
    ]
    record = envelope(5, 0, int(AT.timestamp() * 1000), *events)
    worker = Resolver(
        "x.usage", USAGE.partitions, MemoryDedupeIndex(10**12), BudgetIndex, broker_times=True
    )
    at_ms = record.timestamp_ms
    read = worker.resolve([UsageRecord(record.partition, record.offset, at_ms, record.value)])
    assert (read.rejected, read.events_in) == ([], 2)
    _project(engine, projector, [record])
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 2 * (3 + 4), 2)]
    assert projector.counts["usage_rejected"] == 0
