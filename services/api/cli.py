"""`allotment api`, `allotment plan`, `allotment apply` and `allotment api-key`.

`plan` and `apply` talk to a running API with a key (ALLOTMENT_API_KEY), so budgets as code
goes through the same validation, versions and audit log as every other write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_URL = "http://127.0.0.1:8080"
KeyOption = Annotated[
    str, typer.Option("--key", envvar="ALLOTMENT_API_KEY", help="API key (never echoed).")
]
UrlOption = Annotated[str, typer.Option("--url", envvar="ALLOTMENT_API_URL")]
FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="budgets.yaml")]


def api(
    host: str = "127.0.0.1",
    port: int = 8080,
    projection: Annotated[
        bool,
        typer.Option(
            help="Also run the warehouse projection in this process (its event_id dedupe "
            "window: env ALLOTMENT_DEDUPE_WINDOW_HOURS, as the worker's; else its default)."
        ),
    ] = True,
    rebalance_every: Annotated[
        float, typer.Option(help="Seconds between auto-rebalance passes (0: never).")
    ] = 60.0,
) -> None:
    """Serve the administration API (reads from PostgreSQL, writes to Kafka)."""
    import uvicorn

    from services.api.app import create_app

    app = create_app(run_projection=projection, rebalance_every=rebalance_every or None)
    uvicorn.run(app, host=host, port=port, log_level="info")


def api_key(
    principal: Annotated[str, typer.Option(help="Who acts with this key (the audit actor).")],
    role: Annotated[str, typer.Option(help="admin, tenant-admin or viewer")] = "viewer",
    tenant: Annotated[list[str] | None, typer.Option(help="A tenant it covers (repeat).")] = None,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from services.api.auth import ROLES, InvalidPrincipal, create_key
    from services.common.db import make_engine
    from services.common.settings import StackSettings

    if role not in ROLES:
        raise typer.BadParameter(f"must be one of {', '.join(ROLES)}", param_hint="--role")
    engine = make_engine(StackSettings.from_env().database_url)
    try:
        typer.echo(create_key(engine, principal, role, list(tenant or [])))
    except InvalidPrincipal as exc:
        raise typer.BadParameter(str(exc), param_hint="--principal") from None
    finally:
        engine.dispose()


def api_key_revoke(
    key_id: Annotated[str, typer.Argument(help="The id part of alk_<id>_...")],
) -> None:
    """Revoke an API key: it is refused from the next request on."""
    from services.api.auth import revoke_key
    from services.common.db import make_engine
    from services.common.settings import StackSettings

    engine = make_engine(StackSettings.from_env().database_url)
    try:
        if not revoke_key(engine, key_id):
            typer.echo(f"no live key {key_id!r}", err=True)
            raise typer.Exit(1)
    finally:
        engine.dispose()
    typer.echo(f"revoked {key_id}")


def _live(client: Any, tenant: str) -> dict[str, tuple[int, Any]]:
    from schemas.budgets import BudgetSpec

    response = client.get(f"/v1/tenants/{tenant}/budgets")
    _check(response)
    return {
        b["budget_id"]: (b["version"], BudgetSpec.model_validate(b["spec"]))
        for b in response.json()
    }


def _load(file: Path) -> tuple[str, dict[str, Any]]:
    from services.api.budgets_as_code import BudgetFileInvalid, load_file

    try:
        return load_file(file)
    except BudgetFileInvalid as exc:
        for error in exc.errors:
            typer.echo(f"{file}: {error.field}: {error.rule}", err=True)
        raise typer.Exit(2) from None


def _check(response: Any) -> None:
    if response.status_code >= 400:
        typer.echo(f"error {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)


def _client(url: str, key: str) -> Any:
    import httpx

    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _plan(client: Any, tenant: str, desired: dict[str, Any], prune: bool) -> list[Any]:
    """The ordered changes, or exit 2 with every rule the desired tree breaks (nothing written)."""
    from services.api.budgets_as_code import PlanRejected, plan

    try:
        return plan(desired, _live(client, tenant), prune)
    except PlanRejected as exc:
        for error in exc.errors:
            typer.echo(f"{error.field}: {error.rule}", err=True)
        typer.echo("nothing applied: fix the file (or the live tree) first", err=True)
        raise typer.Exit(2) from None


def plan_command(
    file: FileArg, key: KeyOption, url: UrlOption = DEFAULT_URL, prune: bool = False
) -> None:
    """Show what `apply` would change in the live tree, in the order it would write."""
    tenant, desired = _load(file)
    with _client(url, key) as client:
        changes = _plan(client, tenant, desired, prune)
    for change in changes:
        typer.echo(change.describe())
    typer.echo(f"{len(changes)} change(s) for tenant {tenant}" if changes else "no changes")


def apply_command(
    file: FileArg,
    key: KeyOption,
    url: UrlOption = DEFAULT_URL,
    prune: bool = False,
    reason: str = "",
) -> None:
    """Apply the file: create, amend (and with --prune retire) budgets through the API.

    The whole plan is checked against the final tree before the first write; a write can then
    only fail when the live tree changed meanwhile, and the message says how far it got.
    """
    tenant, desired = _load(file)
    why = reason or f"allotment apply {file.name}"
    base = f"/v1/tenants/{tenant}/budgets"
    with _client(url, key) as client:
        changes = _plan(client, tenant, desired, prune)
        for done, change in enumerate(changes):
            spec = change.spec.model_dump(mode="json") if change.spec is not None else None
            body: dict[str, Any]
            if change.action == "create":
                body = {"budget_id": change.budget_id, "spec": spec, "reason": why}
                response = client.post(base, json=body)
            elif change.action == "amend":
                body = {"expected_version": change.version, "spec": spec, "reason": why}
                response = client.put(f"{base}/{change.budget_id}", json=body)
            else:
                body = {"expected_version": change.version, "reason": why}
                response = client.post(f"{base}/{change.budget_id}/retire", json=body)
            if response.status_code >= 400:
                typer.echo(
                    f"stopped after {done} of {len(changes)} change(s) "
                    f"({change.action} {change.budget_id} was refused); run plan again",
                    err=True,
                )
            _check(response)
            typer.echo(change.describe())
    typer.echo(f"applied {len(changes)} change(s)" if changes else "no changes")


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.command("api-key")(api_key)
    app.command("api-key-revoke")(api_key_revoke)
    app.command("plan")(plan_command)
    app.command("apply")(apply_command)
