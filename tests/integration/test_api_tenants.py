"""Tenant isolation and roles on every endpoint of the OpenAPI spec.

The endpoint list comes from the app's own spec, so a new endpoint is covered (or makes this
test fail) without anyone remembering to add it here.
"""

from __future__ import annotations

from typing import Any

from api_harness import Harness, api_harness, spec, unique
from sqlalchemy import select

from services.api.auth import create_key, hash_key, revoke_key
from services.warehouse import tables as t

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/tenants/{tenant}/budgets"): {
        "budget_id": "intruder",
        "spec": spec(10),
        "reason": "r",
    },
    ("put", "/v1/tenants/{tenant}/budgets/{budget_id}"): {
        "expected_version": 1,
        "spec": spec(1),
        "reason": "r",
    },
    ("post", "/v1/tenants/{tenant}/budgets/{budget_id}/retire"): {
        "expected_version": 1,
        "reason": "r",
    },
    ("post", "/v1/tenants/{tenant}/budgets/{budget_id}/overflow-draws"): {
        "draw_id": "d",
        "tokens": 1,
        "reason": "r",
    },
    ("post", "/v1/tenants/{tenant}/budgets/{budget_id}/reservations"): {
        "reservation_id": "r",
        "tokens": 1,
        "starts_at": "2099-01-01T00:00:00Z",
        "ends_at": "2099-01-02T00:00:00Z",
        "reason": "r",
    },
    ("post", "/v1/tenants/{tenant}/budgets/{budget_id}/reservations/{reservation_id}/release"): {
        "reason": "r"
    },
    ("put", "/v1/tenants/{tenant}/rebalance-rule"): {"reason": "r"},
    ("post", "/v1/tenants/{tenant}/rebalance"): {"reason": "r"},
}


def operations(h: Harness) -> list[tuple[str, str]]:
    paths = h.app.openapi()["paths"]
    return sorted(
        (method, path) for path, ops in paths.items() for method in ops if "{tenant}" in path
    )


async def call(h: Harness, method: str, path: str, headers: dict[str, str], **ids: str) -> Any:
    url = path.format(reservation_id="r", **ids)
    body = BODIES.get((method, path))
    return await h.client.request(method.upper(), url, json=body, headers=headers)


async def test_a_tenants_key_neither_sees_nor_changes_another_tenants_data(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    a, b = unique("tenant-a"), unique("tenant-b")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        key_a = h.key("tenant-admin", [a])
        key_b = h.key("tenant-admin", [b])
        budget_a = unique("a-budget")
        created = await h.client.post(
            f"/v1/tenants/{a}/budgets",
            json={"budget_id": budget_a, "spec": spec(100), "reason": "r"},
            headers=key_a,
        )
        assert created.status_code == 201
        await h.project()
        ops = operations(h)
        writes = {op for op in ops if op[0] != "get"}
        assert set(BODIES) == writes, "every write endpoint needs a body in BODIES"
        assert len(ops) >= 13

        for method, path in ops:
            # B's key on A's tenant path: refused before anything is read or written.
            response = await call(h, method, path, key_b, tenant=a, budget_id=budget_a)
            assert response.status_code == 403, (method, path, response.text)
            # B's key on B's path naming A's budget: A's budget does not exist for B.
            if "{budget_id}" in path:
                response = await call(h, method, path, key_b, tenant=b, budget_id=budget_a)
                assert response.status_code == 404, (method, path, response.text)
            # No key at all.
            response = await call(h, method, path, {}, tenant=a, budget_id=budget_a)
            assert response.status_code == 401, (method, path, response.text)

        await h.project()
        assert [r["budget_id"] for r in h.rows(t.budgets, [a, b])] == [budget_a]
        assert h.rows(t.budgets, [a])[0]["revision"] == 1
        audit = h.rows(t.audit_log, [a, b])
        assert [(r["tenant"], r["event_type"]) for r in audit] == [(a, "BudgetDefined")]
        listed = await h.client.get(f"/v1/tenants/{b}/budgets", headers=key_b)
        assert listed.status_code == 200 and listed.json() == []


async def test_a_viewer_reads_but_never_writes(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("tenant")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        viewer = h.key("viewer", [tenant])
        admin = h.key("admin", [])
        budget = unique("budget")
        created = await h.client.post(
            f"/v1/tenants/{tenant}/budgets",
            json={"budget_id": budget, "spec": spec(100), "reason": "r"},
            headers=admin,
        )
        assert created.status_code == 201
        await h.project()
        for method, path in operations(h):
            response = await call(h, method, path, viewer, tenant=tenant, budget_id=budget)
            if method == "get":
                assert response.status_code == 200, (method, path, response.text)
            else:
                assert response.status_code == 403, (method, path, response.text)


async def test_keys_are_stored_hashed_and_a_revoked_key_is_refused(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("tenant")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        secret = create_key(h.engine, "auditor", "viewer", [tenant])
        key_id = secret.split("_")[1]
        with h.engine.connect() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.key_id == key_id)).one()
        assert secret not in " ".join(str(v) for v in row)
        assert row.key_hash == hash_key(secret)
        headers = {"Authorization": f"Bearer {secret}"}
        assert (await h.client.get(f"/v1/tenants/{tenant}/budgets", headers=headers)).is_success
        forged = {"Authorization": f"Bearer {secret[:-1]}x"}
        assert (
            await h.client.get(f"/v1/tenants/{tenant}/budgets", headers=forged)
        ).status_code == 401
        assert revoke_key(h.engine, key_id)
        refused = await h.client.get(f"/v1/tenants/{tenant}/budgets", headers=headers)
        assert refused.status_code == 401
