"""`allotment rebuild-projections` as a user runs it: a progress bar, then the same rows."""

from __future__ import annotations

import asyncio

from api_harness import ALL_TABLES, api_harness, spec, unique
from typer.testing import CliRunner

from services.cli import build


def test_rebuild_projections_command_gives_the_same_rows(
    kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    tenant = unique("acme")

    async def seed() -> dict[str, list[dict[str, object]]]:
        async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
            key = h.key("tenant-admin", [tenant])
            org = unique("org")
            for budget_id, body in ((org, spec(100)), (unique("team"), spec(50, org))):
                response = await h.client.post(
                    f"/v1/tenants/{tenant}/budgets",
                    json={"budget_id": budget_id, "spec": body, "reason": "seed"},
                    headers=key,
                )
                assert response.status_code == 201
            await h.project()
            return {table.name: h.rows(table, [tenant]) for table in ALL_TABLES}

    def rows() -> dict[str, list[dict[str, object]]]:
        async def read() -> dict[str, list[dict[str, object]]]:
            async with api_harness(kafka_bootstrap, topic_prefix, database_url) as h:
                await h.warehouse.stop()  # read only: the command needs the projection's lock
                return {table.name: h.rows(table, [tenant]) for table in ALL_TABLES}

        return asyncio.run(read())

    live = asyncio.run(seed())
    env = {
        "ALLOTMENT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ALLOTMENT_TOPIC_PREFIX": topic_prefix,
        "ALLOTMENT_DATABASE_URL": database_url,
    }
    result = CliRunner().invoke(build(), ["rebuild-projections", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "projecting" in result.output and "rebuilt from 2 records" in result.output
    assert rows() == live
    assert len(live["budgets"]) == 2 and len(live["audit_log"]) == 2
