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
    ahead = (AT + timedelta(minutes=6)).isoformat()  # the contract's clock-skew rule
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


def test_an_event_stamped_past_its_broker_time_is_not_counted_with_the_workers_skew(
    engine: Engine,
) -> None:
    """The consumer passes the worker's `clock_skew`; received_at as far ahead passes the
    contract, the broker's time does not."""
    tenant = unique("tenant")
    projector = Projector(timedelta(days=7), clock_skew=timedelta(minutes=5))
    _define_budget(engine, projector, tenant)
    stored = int(AT.timestamp() * 1000)
    ahead = (AT + timedelta(minutes=6)).isoformat()
    liar = wire(tenant, id_on(3), 50, occurred_at=ahead, received_at=ahead)
    _project(engine, projector, [envelope(3, 0, stored, wire(tenant, id_on(3), 7), liar)])
    assert totals(engine, t.period_usage, tenant) == [("all", "2020-03", 14, 1)]
    assert projector.counts["usage_rejected"] == 1
    assert USAGE.partitions > 4  # the partitions these tests pick exist
