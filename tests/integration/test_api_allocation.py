"""The tree rules through the API: overflow draws, reservations and auto-rebalance change the
effective limits that the status shows, and every move is an event in the audit log."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any

from api_harness import Harness, api_harness, spec, unique

from schemas.allocation import AllocationMoved, OverflowDrawn, ReservationMade
from schemas.topics import BUDGET_EVENTS, USAGE
from schemas.usage import UsageRecorded


def usage(tenant: str, feature: str, tokens: int, day: int, n: int) -> UsageRecorded:
    at = datetime(2026, 11, day, 10, tzinfo=UTC)
    return UsageRecorded(
        event_id=f"{tenant}-{feature}-{n}",
        source="test",
        occurred_at=at,
        received_at=at,
        tenant=tenant,
        feature=feature,
        request_model="gpt-4o",
        input_uncached=tokens // 2,
        output=tokens - tokens // 2,
    )


async def status(h: Harness, tenant: str, budget: str, key: dict[str, str]) -> dict[str, Any]:
    response = await h.client.get(f"/v1/tenants/{tenant}/budgets/{budget}/status", headers=key)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def define(
    h: Harness, tenant: str, key: dict[str, str], *budgets: tuple[str, dict[str, Any]]
) -> None:
    """Create the budgets in order (parents first), each answered 201."""
    for budget_id, body in budgets:
        created = await h.client.post(
            f"/v1/tenants/{tenant}/budgets",
            json={"budget_id": budget_id, "spec": body, "reason": "plan"},
            headers=key,
        )
        assert created.status_code == 201, created.text


async def overflow_draw(
    h: Harness, tenant: str, key: dict[str, str], budget: str, draw_id: str, tokens: int
) -> Any:
    return await h.client.post(
        f"/v1/tenants/{tenant}/budgets/{budget}/overflow-draws",
        json={"draw_id": draw_id, "tokens": tokens, "reason": "launch week"},
        headers=key,
    )


async def define_team(
    h: Harness, tenant: str, key: dict[str, str], limits: tuple[int, int], **search: Any
) -> tuple[str, str, str, str]:
    """org (1000) > team (100: features search, chat and its own ops) > search, chat."""
    org, team, a, b = unique("org"), unique("team"), unique("search"), unique("chat")
    await define(
        h,
        tenant,
        key,
        (org, spec(1000)),
        (team, spec(100, org, selector={"feature": ["search", "chat", "ops"]})),
        (a, spec(limits[0], team, selector={"feature": ["search"]}, **search)),
        (b, spec(limits[1], team, selector={"feature": ["chat"]})),
    )
    return org, team, a, b


async def test_overflow_reservation_and_rebalance_move_effective_limits(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    now = [datetime(2026, 11, 5, 12, tzinfo=UTC)]
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url, lambda: now[0]) as h:
        key = h.key("tenant-admin", [tenant], principal="lead")
        base = f"/v1/tenants/{tenant}"
        org, a, b = unique("org"), unique("search"), unique("chat")
        await define(
            h,
            tenant,
            key,
            (org, spec(1000)),
            (a, spec(400, org, overflow_cap_tokens=150, selector={"feature": ["search"]})),
            (b, spec(400, org, selector={"feature": ["chat"]})),
        )

        draw = functools.partial(overflow_draw, h, tenant, key)

        assert (await draw(a, "d1", 100)).status_code == 201
        reused = await draw(a, "d1", 1)
        assert reused.status_code == 422 and reused.json()["errors"][0]["field"] == "draw_id"
        capped = await draw(a, "d2", 60)
        assert capped.status_code == 422 and capped.json()["errors"][0]["field"] == "tokens"
        assert (await draw(b, "d3", 1)).status_code == 422  # b has no overflow cap

        reservation = {
            "reservation_id": "black-friday",
            "tokens": 150,
            "starts_at": "2026-11-27T00:00:00Z",
            "ends_at": "2026-11-30T00:00:00Z",
            "reason": "sale traffic",
        }
        too_big = await h.client.post(
            f"{base}/budgets/{org}/reservations", json=reservation, headers=key
        )
        assert too_big.status_code == 422  # the pool holds only 100 after the draw
        reservation["tokens"] = 100
        reserved = await h.client.post(
            f"{base}/budgets/{org}/reservations", json=reservation, headers=key
        )
        assert reserved.status_code == 201, reserved.text
        starved = await draw(a, "d4", 10)
        assert starved.status_code == 422 and "pool" in starved.json()["errors"][0]["rule"]

        await h.produce(
            USAGE,
            [
                (e.event_id, e)
                for e in [usage(tenant, "search", 50, 3, i) for i in range(2)]
                + [usage(tenant, "chat", 100, 4, i) for i in range(3)]
            ],
        )
        await h.project()
        assert (await status(h, tenant, a, key))["effective_limits"] == {"total": 500}
        assert (await status(h, tenant, a, key))["consumed"]["total"] == 100
        org_status = await status(h, tenant, org, key)
        assert org_status["effective_limits"] == {"total": 900}
        assert org_status["pool"] == {"total": 0}
        assert org_status["consumed"]["total"] == 400

        early = await h.client.post(f"{base}/rebalance", json={"reason": "mid"}, headers=key)
        assert early.status_code == 200 and early.json()["events"] == []
        now[0] = datetime(2026, 11, 20, tzinfo=UTC)
        moved = await h.client.post(f"{base}/rebalance", json={"reason": "mid"}, headers=key)
        assert [(e["from_budget_id"], e["tokens"]) for e in moved.json()["events"]] == [(a, 200)]
        again = await h.client.post(f"{base}/rebalance", json={"reason": "mid"}, headers=key)
        assert again.json()["events"] == []

        await h.project()
        assert (await status(h, tenant, a, key))["effective_limits"] == {"total": 300}
        assert (await status(h, tenant, org, key))["pool"] == {"total": 200}
        now[0] = datetime(2026, 11, 28, tzinfo=UTC)
        assert (await status(h, tenant, org, key))["effective_limits"] == {"total": 1000}

        events = [
            e for e in await h.read_topic(BUDGET_EVENTS) if getattr(e, "tenant", "") == tenant
        ]
        kinds = [type(e) for e in events if not type(e).__name__.startswith("Budget")]
        assert kinds == [OverflowDrawn, ReservationMade, AllocationMoved]
        audit = (await h.client.get(f"{base}/audit", headers=key)).json()
        assert audit[0]["event_type"] == "AllocationMoved"
        assert audit[0]["actor"].startswith("lead") and audit[0]["reason"].startswith("mid")
        daily = (await h.client.get(f"{base}/budgets/{org}/usage/daily", headers=key)).json()
        assert [(d["day"], d["feature"], d["model"], d["total_tokens"]) for d in daily] == [
            ("2026-11-03", "search", "gpt-4o", 100),
            ("2026-11-04", "chat", "gpt-4o", 300),
        ]


async def test_the_api_rebalances_on_its_own_timer(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    at = datetime(2026, 11, 20, tzinfo=UTC)
    async with api_harness(
        kafka_bootstrap, topic_prefix, database_url, lambda: at, rebalance_every=0.2
    ) as h:
        key = h.key("tenant-admin", [tenant])
        org, idle = unique("org"), unique("idle")
        await define(h, tenant, key, (org, spec(1000)), (idle, spec(400, org)))
        moves: list[AllocationMoved] = []
        for _ in range(100):
            events = await h.read_topic(BUDGET_EVENTS)
            moves = [e for e in events if isinstance(e, AllocationMoved) and e.tenant == tenant]
            if moves:
                break
            await asyncio.sleep(0.2)
        assert [(m.from_budget_id, m.to_budget_id, m.tokens, m.actor) for m in moves] == [
            (idle, org, 200, "auto-rebalance")
        ]


async def test_the_status_of_a_rolling_budget_sums_its_window(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    async with api_harness(kafka_bootstrap, topic_prefix, database_url, lambda: now) as h:
        key = h.key("viewer", [tenant])
        admin = h.key("tenant-admin", [tenant])
        weekly = unique("weekly")
        body = spec(1000, period={"kind": "rolling", "window_days": 7})
        created = await h.client.post(
            f"/v1/tenants/{tenant}/budgets",
            json={"budget_id": weekly, "spec": body, "reason": "r"},
            headers=admin,
        )
        assert created.status_code == 201
        await h.project()
        events = [usage(tenant, "any", 10 * day, day, day) for day in (1, 5, 9)]
        await h.produce(USAGE, [(e.event_id, e) for e in events])
        await h.project()
        body = await status(h, tenant, weekly, key)
        assert body["consumed"]["total"] == 50 + 90
        assert [row["period_key"] for row in body["history"]] == [
            "2026-11-09",
            "2026-11-05",
            "2026-11-01",
        ]


async def test_spent_and_allocated_tokens_are_neither_reserved_nor_given_back(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    """A team (100) hands 60 to search and 40 to chat; search spent 45 of its 60."""
    now = [datetime(2026, 11, 5, 12, tzinfo=UTC)]
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url, lambda: now[0]) as h:
        key = h.key("tenant-admin", [tenant], principal="lead")
        base = f"/v1/tenants/{tenant}"
        org, team, a, b = await define_team(h, tenant, key, (60, 40))
        await h.produce(USAGE, [(e.event_id, e) for e in [usage(tenant, "search", 45, 3, 0)]])
        await h.project()
        assert (await status(h, tenant, a, key))["consumed"]["total"] == 45

        async def reserve(budget: str, tokens: int) -> Any:
            body = {
                "reservation_id": f"r-{tokens}",
                "tokens": tokens,
                "starts_at": "2026-11-27T00:00:00Z",
                "ends_at": "2026-11-30T00:00:00Z",
                "reason": "sale traffic",
            }
            return await h.client.post(
                f"{base}/budgets/{budget}/reservations", json=body, headers=key
            )

        spent = await reserve(a, 16)
        assert spent.status_code == 422, spent.text
        error = spent.json()["errors"][0]
        assert error["field"] == "tokens" and "15 unspent" in error["rule"], error
        assert "45 consumed in 2026-11" in error["rule"]
        assert (await reserve(team, 1)).status_code == 422  # all of it is its children's
        assert (await reserve(a, 15)).status_code == 201

        now[0] = datetime(2026, 11, 20, tzinfo=UTC)
        moved = await h.client.post(f"{base}/rebalance", json={"reason": "mid"}, headers=key)
        assert moved.status_code == 200, moved.text
        assert [
            (e["from_budget_id"], e["to_budget_id"], e["tokens"]) for e in moved.json()["events"]
        ] == [
            (b, team, 20),
            (team, org, 20),  # only what chat gave back; search's 60 stay search's
        ]
        await h.project()
        assert (await status(h, tenant, team, key))["pool"] == {"total": 0}
        assert (await status(h, tenant, team, key))["effective_limits"] == {"total": 80}
        assert (await status(h, tenant, org, key))["pool"] == {"total": 920}


async def test_a_draw_takes_only_what_the_parent_has_not_spent_itself(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    """A team (100) hands 40 to search and 40 to chat; its own ops usage spent 15 of the 20 left."""
    tenant = unique("acme")
    early = datetime(2026, 11, 5, 12, tzinfo=UTC)
    async with api_harness(kafka_bootstrap, topic_prefix, database_url, lambda: early) as h:
        key = h.key("tenant-admin", [tenant])
        _, team, a, _ = await define_team(h, tenant, key, (40, 40), overflow_cap_tokens=30)
        await h.produce(USAGE, [(e.event_id, e) for e in [usage(tenant, "ops", 15, 3, 0)]])
        await h.project()
        assert (await status(h, tenant, team, key))["consumed"]["total"] == 15
        spent = await overflow_draw(h, tenant, key, a, "d1", 6)
        assert spent.status_code == 422, spent.text
        error = spent.json()["errors"][0]
        assert (
            error["field"] == "tokens" and "5 total tokens unallocated and unspent" in error["rule"]
        ), error
        assert "15 consumed in 2026-11" in error["rule"]
        assert (await overflow_draw(h, tenant, key, a, "d2", 5)).status_code == 201
