"""`allotment plan` / `allotment apply` against a served API: diff, apply, re-apply is a no-op."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from api_harness import served, unique
from typer.testing import CliRunner

from services.api.app import create_app
from services.api.auth import create_key
from services.cli import build
from services.common.db import make_engine
from services.common.settings import StackSettings

FILE = """
tenant: {tenant}
budgets:
  - id: {org}
    name: Org
    limits: {{total_tokens: {org_limit}}}
    period: {{kind: month, timezone: Europe/Berlin}}
  - id: {team}
    name: Support copilot
    parent: {org}
    limits: {{total_tokens: {team_limit}}}
    period: {{kind: month, timezone: Europe/Berlin}}
"""


def cli(*args: str) -> str:
    result = CliRunner().invoke(build(), list(args))
    assert result.exit_code == 0, result.output
    return result.output


def wait_for_versions(url: str, key: str, tenant: str, want: dict[str, int]) -> None:
    """Poll the read model (the projection runs inside the served API) until it caught up."""
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        listed = httpx.get(f"{url}/v1/tenants/{tenant}/budgets", headers=headers).json()
        if {b["budget_id"]: b["version"] for b in listed} == want:
            return
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


def a_tenant(database_url: str) -> tuple[str, str, str, str]:
    """A fresh tenant, org and team id, and a tenant-admin key for it."""
    tenant, org, team = unique("acme"), unique("org"), unique("support")
    engine = make_engine(database_url)
    key = create_key(engine, "platform-team", "tenant-admin", [tenant])
    engine.dispose()
    return tenant, org, team, key


async def test_plan_apply_and_reapply_change_nothing(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, org, team, key = a_tenant(database_url)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(
        FILE.format(tenant=tenant, org=org, team=team, org_limit=1000, team_limit=400)
    )
    app = create_app(StackSettings(kafka_bootstrap, database_url, topic_prefix), None, True)

    def scenario() -> None:
        with served(app) as url:
            common = ["--url", url, "--key", key]
            planned = cli("plan", str(budgets), *common)
            assert f"+ create {org}" in planned and f"+ create {team}" in planned
            assert planned.index(org) < planned.index(team)
            assert "applied 2 change(s)" in cli("apply", str(budgets), *common)
            wait_for_versions(url, key, tenant, {org: 1, team: 1})
            assert "no changes" in cli("plan", str(budgets), *common)
            assert "no changes" in cli("apply", str(budgets), *common)

            budgets.write_text(
                FILE.format(tenant=tenant, org=org, team=team, org_limit=2000, team_limit=400)
            )
            planned = cli("plan", str(budgets), *common)
            assert f"~ amend {org}" in planned and "1000 -> 2000" in planned
            assert team not in planned
            cli("apply", str(budgets), *common, "--reason", "FY27 growth")
            wait_for_versions(url, key, tenant, {org: 2, team: 1})
            audit = httpx.get(
                f"{url}/v1/tenants/{tenant}/audit", headers={"Authorization": f"Bearer {key}"}
            ).json()
            assert (audit[0]["event_type"], audit[0]["reason"]) == ("BudgetAmended", "FY27 growth")
            assert audit[0]["actor"] == "platform-team"

    await asyncio.to_thread(scenario)


async def test_apply_shrinks_a_tree_and_refuses_a_bad_one_before_any_write(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, org, team, key = a_tenant(database_url)
    budgets = tmp_path / "budgets.yaml"

    def write(org_limit: int, team_limit: int) -> None:
        text = FILE.format(
            tenant=tenant, org=org, team=team, org_limit=org_limit, team_limit=team_limit
        )
        budgets.write_text(text)

    app = create_app(StackSettings(kafka_bootstrap, database_url, topic_prefix), None, True)

    def scenario() -> None:
        with served(app) as url:
            common = ["--url", url, "--key", key]
            write(1000, 800)
            cli("apply", str(budgets), *common)
            wait_for_versions(url, key, tenant, {org: 1, team: 1})

            write(500, 400)  # both shrink: the team must go first
            planned = cli("plan", str(budgets), *common)
            assert planned.index(f"~ amend {team}") < planned.index(f"~ amend {org}")
            assert "applied 2 change(s)" in cli("apply", str(budgets), *common)
            wait_for_versions(url, key, tenant, {org: 2, team: 2})

            # The org would grow but the team would hold more than it: the org's write alone
            # would pass, yet nothing is written.
            write(2000, 2500)
            result = CliRunner().invoke(build(), ["apply", str(budgets), *common])
            assert result.exit_code == 2, result.output
            assert f"budgets[{org}].spec.limits.total_tokens" in result.output
            assert "nothing applied" in result.output
            time.sleep(1)  # give a wrong write time to reach the read model before looking
            wait_for_versions(url, key, tenant, {org: 2, team: 2})

    await asyncio.to_thread(scenario)
