"""Budget writes through the API: event on the topics, projection, read; versions; 422 rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from api_harness import api_harness, spec, unique

from schemas.budgets import BudgetAmended, BudgetDefined
from schemas.topics import BUDGET_EVENTS, BUDGETS


async def test_a_write_reaches_the_topics_the_projection_and_the_reads(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant], principal="finops-lead")
        base = f"/v1/tenants/{tenant}"
        created = await h.client.post(
            f"{base}/budgets",
            json={"budget_id": f"{tenant}/org", "spec": spec(1000), "reason": "FY27"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        org = unique("org")
        created = await h.client.post(
            f"{base}/budgets",
            json={"budget_id": org, "spec": spec(1000, name="Org"), "reason": "FY27 plan"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1

        audit_events = await h.read_topic(BUDGET_EVENTS)
        mirror = await h.read_topic(BUDGETS)
        defined = [e for e in audit_events if isinstance(e, BudgetDefined) and e.budget_id == org]
        assert len(defined) == 1 and defined[0].actor.startswith("finops-lead")
        assert [e.budget_id for e in mirror if isinstance(e, BudgetDefined)].count(org) == 1

        assert (await h.client.get(f"{base}/budgets/{org}", headers=admin)).status_code == 404
        await h.project()
        got = await h.client.get(f"{base}/budgets/{org}", headers=admin)
        assert got.status_code == 200 and got.json()["spec"]["name"] == "Org"

        team = unique("team")
        created = await h.client.post(
            f"{base}/budgets",
            json={"budget_id": team, "spec": spec(400, org), "reason": "support"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        await h.project()
        slashed = await h.client.get(f"{base}/budgets/{tenant}/org", headers=admin)
        assert slashed.status_code == 200 and slashed.json()["budget_id"] == f"{tenant}/org"
        slashed = await h.client.get(f"{base}/budgets/{tenant}/org/status", headers=admin)
        assert slashed.status_code == 200 and slashed.json()["budget_id"] == f"{tenant}/org"
        tree = (await h.client.get(f"{base}/tree", headers=admin)).json()
        org_node = next(n for n in tree["roots"] if n["budget_id"] == org)
        assert [c["budget_id"] for c in org_node["children"]] == [team]

        audit = (await h.client.get(f"{base}/audit", headers=admin)).json()
        assert [(a["event_type"], a["budget_id"], a["reason"]) for a in audit[:2]] == [
            ("BudgetDefined", team, "support"),
            ("BudgetDefined", org, "FY27 plan"),
        ]


async def test_a_stale_version_gets_409_and_the_current_one_wins(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"
        budget = unique("b")
        await h.client.post(
            base, json={"budget_id": budget, "spec": spec(100), "reason": "r"}, headers=admin
        )
        amend = {"expected_version": 1, "spec": spec(200), "reason": "growth"}
        first = await h.client.put(f"{base}/{budget}", json=amend, headers=admin)
        assert first.status_code == 200 and first.json()["version"] == 2
        stale = await h.client.put(f"{base}/{budget}", json=amend, headers=admin)
        assert stale.status_code == 409
        assert "version 2, not 1" in stale.json()["detail"]
        again = await h.client.post(
            base, json={"budget_id": budget, "spec": spec(1), "reason": "r"}, headers=admin
        )
        assert again.status_code == 409
        retire = await h.client.post(
            f"{base}/{budget}/retire", json={"expected_version": 2, "reason": "done"}, headers=admin
        )
        assert retire.status_code == 200 and retire.json()["retired"] is True
        amended = [e for e in await h.read_topic(BUDGET_EVENTS) if isinstance(e, BudgetAmended)]
        assert [e.revision for e in amended if e.budget_id == budget] == [2]


def _errors(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    return [(e["field"], e["rule"]) for e in response.json()["errors"]]


async def test_bad_input_gets_422_naming_field_and_rule(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"

        async def create(budget_id: str, body: dict[str, Any]) -> Any:
            # json.dumps escapes a lone surrogate as \\ud800, as a hostile client may send it.
            payload = json.dumps({"budget_id": budget_id, "spec": body, "reason": "r"})
            headers = {**admin, "content-type": "application/json"}
            return await h.client.post(base, content=payload, headers=headers)

        org, a, b = unique("org"), unique("a"), unique("b")
        assert (await create(org, spec(100))).status_code == 201
        assert (await create(a, spec(60, org))).status_code == 201

        over = _errors(await create(b, spec(50, org)))
        assert over[0][0] == "spec.limits.total_tokens" and "allows no overflow" in over[0][1]
        ghost = _errors(await create(b, spec(10, "nobody")))
        assert ghost[0][0] == "spec.parent" and "unknown parent" in ghost[0][1]
        cycle = await h.client.put(
            f"{base}/{org}",
            json={"expected_version": 1, "spec": spec(100, a), "reason": "r"},
            headers=admin,
        )
        assert _errors(cycle)[0][0] == "spec.parent" and "cycle" in _errors(cycle)[0][1]
        zero = _errors(await create(b, spec(0)))
        assert zero[0][0] == "spec.limits.total_tokens"
        negative = _errors(await create(b, spec(-5)))
        assert negative[0][0] == "spec.limits.total_tokens"
        zone = _errors(await create(b, spec(10, period={"timezone": "Mars/Olympus"})))
        assert zone[0][0] == "spec.period.timezone" and "IANA" in zone[0][1]
        for bad in (0, 201):
            threshold = _errors(await create(b, spec(10, thresholds=[50, bad])))
            assert threshold[0][0] == "spec.thresholds.1"
        rolling = _errors(await create(b, spec(10, period={"kind": "rolling"})))
        assert rolling[0][0] == "spec.period.window_days"
        no_limit = _errors(await create(b, {"name": "n", "limits": {}}))
        assert no_limit[0][0] == "spec.limits"
        for text in ("nul\x00", "lone \ud800 surrogate"):
            bad_text = _errors(await create(b, spec(10, name=text)))
            assert bad_text[0][0] == "spec.name" and "NUL" in bad_text[0][1]
        assert (await create(b, spec(10, thresholds=[50, 200]))).status_code == 201


async def test_concurrent_writers_with_one_version_get_one_success(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"
        budget = unique("b")
        await h.client.post(
            base, json={"budget_id": budget, "spec": spec(100), "reason": "r"}, headers=admin
        )
        responses = await asyncio.gather(
            *(
                h.client.put(
                    f"{base}/{budget}",
                    json={"expected_version": 1, "spec": spec(100 + i), "reason": f"w{i}"},
                    headers=admin,
                )
                for i in range(1, 9)
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] + [409] * 7
        amended = [e for e in await h.read_topic(BUDGET_EVENTS) if isinstance(e, BudgetAmended)]
        assert [e.revision for e in amended if e.budget_id == budget] == [2]


async def test_a_write_the_broker_does_not_acknowledge_gets_503_and_changes_nothing(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant])
        base = f"/v1/tenants/{tenant}/budgets"
        budget = unique("b")
        publisher = h.app.state.services.commands.publisher
        producer = publisher._producer

        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise KafkaTimeoutError()

        producer.send = refuse
        refused = await h.client.post(
            base, json={"budget_id": budget, "spec": spec(100), "reason": "r"}, headers=admin
        )
        assert refused.status_code == 503, refused.text
        assert publisher._producer is not producer  # a fresh producer replaced the failed one
        accepted = await h.client.post(
            base, json={"budget_id": budget, "spec": spec(100), "reason": "r"}, headers=admin
        )
        assert accepted.status_code == 201 and accepted.json()["version"] == 1
        defined = [e for e in await h.read_topic(BUDGET_EVENTS) if isinstance(e, BudgetDefined)]
        assert [e.budget_id for e in defined] == [budget]


async def test_a_failed_mirror_write_is_repaired_from_the_source_of_truth(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        admin = h.key("tenant-admin", [tenant])
        budget = unique("b")
        producer = h.app.state.services.commands.publisher._producer
        send = producer.send

        async def mirror_fails(topic: str, *args: Any, **kwargs: Any) -> Any:
            if topic == BUDGETS.name(topic_prefix):
                raise KafkaTimeoutError()
            return await send(topic, *args, **kwargs)

        producer.send = mirror_fails
        body = {"budget_id": budget, "spec": spec(100), "reason": "r"}
        unknown = await h.client.post(f"/v1/tenants/{tenant}/budgets", json=body, headers=admin)
        assert unknown.status_code == 503
        # The source of truth took the write; the repaired mirror holds it too, and a retry
        # learns that the budget exists.
        assert [e.budget_id for e in await h.read_topic(BUDGET_EVENTS)] == [budget]
        assert [e.budget_id for e in await h.read_topic(BUDGETS)] == [budget]
        retry = await h.client.post(f"/v1/tenants/{tenant}/budgets", json=body, headers=admin)
        assert retry.status_code == 409
