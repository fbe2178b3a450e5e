"""End to end with a real pipeline worker: a budget defined through the API is charged by the
worker, its crossings and policy reach the read models, and the API shows them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api_harness import api_harness, spec, unique
from pipeline_harness import WorkerProcess

from schemas.topics import USAGE
from schemas.usage import UsageRecorded


async def test_the_api_shows_what_the_pipeline_concluded(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = unique("acme")
    now = datetime.now(UTC)
    async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
        key = h.key("tenant-admin", [tenant])
        budget = unique("copilot")
        created = await h.client.post(
            f"/v1/tenants/{tenant}/budgets",
            json={"budget_id": budget, "spec": spec(1000, at_limit="hard_stop"), "reason": "r"},
            headers=key,
        )
        assert created.status_code == 201
        worker = WorkerProcess(
            topic_prefix, tmp_path / "store", tmp_path / "worker.log", kafka_bootstrap,
            ["--store", "memory"],
        ).start()  # fmt: skip
        try:
            events = [
                UsageRecorded(
                    event_id=f"{tenant}-{i}",
                    source="test",
                    occurred_at=now,
                    received_at=now,
                    tenant=tenant,
                    input_uncached=300,
                    output=100,
                )
                for i in range(3)
            ]
            await h.produce(USAGE, [(e.event_id, e) for e in events])
            body: dict[str, Any] = {}
            for _ in range(120):
                await h.project()
                response = await h.client.get(
                    f"/v1/tenants/{tenant}/budgets/{budget}/status", headers=key
                )
                body = response.json()
                if body.get("policy") and body["policy"]["policy"] == "hard_stop":
                    break
                assert worker.alive(), worker.log_tail()
                await asyncio.sleep(0.5)
            assert body["consumed"]["total"] == 1200, body
            assert body["policy"]["policy"] == "hard_stop", (body, worker.log_tail())
            crossings = (
                await h.client.get(f"/v1/tenants/{tenant}/budgets/{budget}/thresholds", headers=key)
            ).json()
            assert sorted(c["threshold"] for c in crossings) == [75, 90, 100]
            history = (
                await h.client.get(f"/v1/tenants/{tenant}/budgets/{budget}/policies", headers=key)
            ).json()
            assert history[-1]["policy"] == "hard_stop"
        finally:
            worker.stop()
