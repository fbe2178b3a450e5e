"""Usage keeps the budgets in force when it was recorded; a re-used id counts as in the worker.

The first test runs the API and the projection on the real broker (review B, finding 3); the
others drive the projector with records of chosen record times against the real PostgreSQL.
Their record times are in 2020, so the usage_seen rows they prune are only their own (the
session's database is shared).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_harness import api_harness, spec, unique
from sqlalchemy import Engine, select
from test_warehouse_rebuild import AT, usage

from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired, BudgetSpec
from schemas.codec import encode
from schemas.topics import USAGE
from schemas.usage import UsageBatch, UsageRecorded
from services.common.db import make_engine
from services.common.kafka import partition_for
from services.warehouse import tables as t
from services.warehouse.projector import Projector, Record
from services.warehouse.rebuild import rebuild
from streams.faust.dedupe_log import EXPIRY_SLACK_MS
from streams.periods import to_ms

T0 = to_ms(datetime(2020, 3, 1, tzinfo=UTC))
HOUR = 3_600_000


def totals(engine: Engine, table: Any, tenant: str) -> list[tuple[Any, ...]]:
    """(budget, period or day, total tokens, events) per row, budget ids without their suffix."""
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.tenant == tenant)).mappings().all()
    when = "period_key" if "period_key" in table.c else "day"
    return sorted(
        (r["budget_id"].rsplit("-", 1)[0], str(r[when]), r["total_tokens"], r["events"])
        for r in rows
    )


async def test_a_rebuild_equals_the_live_state_after_a_budget_is_retired_and_one_rescoped(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        key = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"
        old, ml = unique("old"), unique("ml")
        for budget_id, body in ((old, spec(10_000)), (ml, spec(5_000, selector={"team": ["ml"]}))):
            response = await h.client.post(
                base, json={"budget_id": budget_id, "spec": body, "reason": "r"}, headers=key
            )
            assert response.status_code == 201
        before = unique("before")
        await h.produce(USAGE, [(before, usage(tenant, before, 10, team="ml", feature="rag"))])
        await h.project()
        retired = await h.client.post(
            f"{base}/{old}/retire", json={"expected_version": 1, "reason": "gone"}, headers=key
        )
        assert retired.status_code == 200, retired.text
        rescoped = await h.client.put(
            f"{base}/{ml}",
            json={
                "expected_version": 1,
                "reason": "web now",
                "spec": spec(5_000, selector={"team": ["web"]}),
            },
            headers=key,
        )
        assert rescoped.status_code == 200, rescoped.text
        after = [
            usage(tenant, unique("after"), n, team=team) for n, team in ((1, "ml"), (2, "web"))
        ]
        await h.produce(USAGE, [(e.event_id, e) for e in after])
        await h.project()

        live = {table: totals(h.engine, table, tenant) for table in (t.period_usage, t.daily_usage)}
        # Before the changes: both budgets, as they were. After: only ml, re-scoped to web.
        assert live[t.period_usage] == [("ml", "2026-11", 20 + 4, 2), ("old", "2026-11", 20, 1)]
        assert live[t.daily_usage] == [
            ("ml", "2026-11-10", 4, 1),  # no feature
            ("ml", "2026-11-10", 20, 1),  # feature rag
            ("old", "2026-11-10", 20, 1),
        ]

        revisions = h.rows(t.budget_revisions, [tenant])
        # ml: defined, re-scoped; old: defined, retired (primary-key order)
        assert [(r["revision"], r["retired"]) for r in revisions] == [
            (1, False), (2, False), (1, False), (2, True)
        ]  # fmt: skip

        await h.warehouse.stop()
        await rebuild(h.engine, kafka_bootstrap, topic_prefix)
        rebuilt = {
            table: totals(h.engine, table, tenant) for table in (t.period_usage, t.daily_usage)
        }
        assert rebuilt == live
        assert h.rows(t.budget_revisions, [tenant]) == revisions


def _budget(tenant: str, budget_id: str, revision: int, team: str | None = None) -> Event:
    body: dict[str, Any] = {"name": budget_id, "limits": {"total_tokens": 1000}}
    if team is not None:
        body["selector"] = {"team": [team]}
    common: dict[str, Any] = {"budget_id": budget_id, "tenant": tenant, "revision": revision}
    common |= {"occurred_at": AT, "actor": "test"}
    if revision == 1:
        return BudgetDefined(**common, spec=BudgetSpec.model_validate(body))
    if team is None:
        return BudgetRetired(**common)
    return BudgetAmended(**common, spec=BudgetSpec.model_validate(body))


def id_on(partition: int, prefix: str = "x") -> str:
    """A fresh event id that hashes to usage `partition` (where the worker reads it)."""
    while True:
        event_id = unique(prefix)
        if partition_for(event_id, USAGE.partitions) == partition:
            return event_id


class Feed:
    """Records with chosen record times, offsets counted per (kind, partition).

    Usage goes to the partition its (first) event id hashes to unless one is given: the
    projector, like the worker, refuses an event read from another partition.
    """

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def record(self, kind: str, event: Event, at_ms: int, partition: int | None = None) -> Record:
        if partition is None:
            first = event.events[0] if isinstance(event, UsageBatch) else event
            home = isinstance(first, UsageRecorded)
            partition = partition_for(first.event_id, USAGE.partitions) if home else 0
        offset = self.offsets.get((kind, partition), 0)
        self.offsets[(kind, partition)] = offset + 1
        return Record(kind, f"x.{kind}", partition, offset, encode(event), at_ms)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_usage_is_charged_to_the_revisions_in_force_at_its_record_time(engine: Engine) -> None:
    tenant, team = unique("tenant"), unique("team")
    feed = Feed()
    config = [
        feed.record("budget-events", _budget(tenant, team, 1, "ml"), T0 + 10 * HOUR),
        feed.record("budget-events", _budget(tenant, team, 2, "web"), T0 + 20 * HOUR),
        feed.record("budget-events", _budget(tenant, team, 3), T0 + 30 * HOUR),
    ]
    stamps = {"early": 5, "ml": 15, "ml-late": 25, "web": 25, "gone": 35}
    teams = {"early": "ml", "ml": "ml", "ml-late": "ml", "web": "web", "gone": "web"}
    records = [
        feed.record("usage", usage(tenant, f"{tenant}-{name}", 1, team=teams[name]), T0 + h * HOUR)
        for name, h in stamps.items()
    ]
    projector = Projector(timedelta(days=7))
    with engine.begin() as conn:
        projector.load(conn)
        projector.project(conn, config)
    restarted = Projector(timedelta(days=7))  # what it knows comes back from the table
    with engine.begin() as conn:
        restarted.load(conn)
        restarted.project(conn, records)
    # Only "ml" (team ml while revision 1 held) and "web" (team web under revision 2) charge it.
    assert totals(engine, t.period_usage, tenant) == [("team", "2026-11", 4, 2)]
    with engine.connect() as conn:
        valid = conn.execute(
            select(t.budget_revisions.c.revision, t.budget_revisions.c.retired)
            .where(t.budget_revisions.c.tenant == tenant)
            .order_by(t.budget_revisions.c.valid_from)
        ).all()
    assert [tuple(v) for v in valid] == [(1, False), (2, False), (3, True)]


def test_a_reused_event_id_counts_again_after_the_dedupe_window(engine: Engine) -> None:
    tenant, budget = unique("tenant"), unique("all")
    feed = Feed()
    reused = unique("reused")
    projector = Projector(timedelta(hours=2))
    sightings = [
        feed.record("usage", usage(tenant, reused, 1), T0 + at)
        for at in (0, HOUR, 2 * HOUR, 3 * HOUR + 1)  # counted, copy, copy, counts again
    ]
    with engine.begin() as conn:
        projector.project(conn, [feed.record("budget-events", _budget(tenant, budget, 1), T0)])
    for record in sightings:  # one batch each
        with engine.begin() as conn:
            projector.project(conn, [record])
    assert totals(engine, t.period_usage, tenant) == [("all", "2026-11", 4, 2)]
    # Two copies in one envelope: the second is within the window of the first.
    tenant2, budget2 = unique("tenant"), unique("all")
    events = [usage(tenant2, unique("again"), 1)] * 2
    with engine.begin() as conn:
        projector.project(conn, [feed.record("budget-events", _budget(tenant2, budget2, 1), T0)])
        batch = UsageBatch(events=events)
        projector.project(conn, [feed.record("usage", batch, T0 + 4 * HOUR)])
    assert totals(engine, t.period_usage, tenant2) == [("all", "2026-11", 2, 1)]


def test_usage_seen_drops_ids_once_every_partition_is_past_the_window(engine: Engine) -> None:
    tenant, budget = unique("tenant"), unique("all")
    window = timedelta(hours=1)
    past = HOUR + EXPIRY_SLACK_MS + 1  # how far every partition must move past a sighting
    feed = Feed()
    old = id_on(0, "old")  # on the partition that moves last
    projector = Projector(window)

    def seen(event_id: str) -> bool:
        with engine.connect() as conn:
            stmt = select(t.usage_seen.c.event_id).where(t.usage_seen.c.event_id == event_id)
            return conn.execute(stmt).first() is not None

    with engine.begin() as conn:
        projector.project(conn, [feed.record("budget-events", _budget(tenant, budget, 1), T0)])
        projector.project(conn, [feed.record("usage", usage(tenant, old, 1), T0)])
        # Five of six partitions move far ahead: the sixth may still hold older records.
        for p in range(1, USAGE.partitions):
            projector.project(
                conn, [feed.record("usage", usage(tenant, id_on(p), 1), T0 + past, p)]
            )
    assert seen(old)
    with engine.begin() as conn:
        projector.project(conn, [feed.record("usage", usage(tenant, id_on(0), 1), T0 + past, 0)])
    assert not seen(old)
    with engine.begin() as conn:  # a later copy counts, as it would have with the row kept
        projector.project(conn, [feed.record("usage", usage(tenant, old, 1), T0 + past + 1)])
    assert seen(old)
    assert totals(engine, t.period_usage, tenant) == [("all", "2026-11", 2 * 8, 8)]


async def test_usage_fetched_beside_config_it_did_not_take_waits_for_that_config(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    """Without the consumer's check after each fetch, this failed in about 1 run of 3: a batch
    cut by `max_records` took usage while budgets fetched with it were still unread."""
    from fakes.kafka_io import send_events

    from schemas.topics import BUDGET_EVENTS
    from services.warehouse.consumer import WarehouseConsumer

    tenants = [unique("tenant") for _ in range(8)]  # over every config and usage partition
    engine = make_engine(database_url)
    consumer = WarehouseConsumer(engine, kafka_bootstrap, topic_prefix)
    await consumer.start()  # the config topic is empty now: nothing to wait for yet
    try:
        config = [
            (BUDGET_EVENTS.name(topic_prefix), tenant, _budget(tenant, unique("all"), 1))
            for tenant in tenants
        ]
        events = [usage(tenant, unique("e"), 1) for tenant in tenants]
        await send_events(
            kafka_bootstrap, [*config, *((USAGE.name(topic_prefix), e.event_id, e) for e in events)]
        )
        for _ in range(200):  # a few records a batch: usage may come before some config
            await consumer.step(timeout_ms=200, max_records=3)
            if await consumer.backlog() == 0:
                break
        found = [totals(engine, t.period_usage, tenant) for tenant in tenants]
        assert found == [[("all", "2026-11", 2, 1)]] * len(tenants)
    finally:
        await consumer.stop()
        engine.dispose()
