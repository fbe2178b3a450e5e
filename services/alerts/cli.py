"""`allotment alerts` runs the alerts service; `allotment alerts resend ID` queues a row again.

`alerts` is both a command and a group, so it is a sub-app whose callback runs the service when
no subcommand is given.
"""

from __future__ import annotations

import typer

alerts_app = typer.Typer(
    help="Alert delivery: Slack, PagerDuty, signed webhooks, email; OTel and Prometheus.",
    invoke_without_command=True,
)


@alerts_app.callback(invoke_without_command=True)
def alerts(ctx: typer.Context) -> None:
    """Run the alerts service (config file in ALLOTMENT_ALERTS_CONFIG)."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import logging

    from services.alerts.app import AlertsSettings, run
    from services.alerts.errors import AlertConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = AlertsSettings.from_env()
        asyncio.run(run(settings))
    except AlertConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@alerts_app.command("resend")
def resend(
    row_id: int = typer.Argument(..., help="The outbox row id"),
    force: bool = typer.Option(False, "--force", help="Send a delivered alert again"),
) -> None:
    """Put a failed (or suppressed) alert back in the queue, due now."""
    from schemas.errors import AllotmentError
    from services.alerts.app import resend as do_resend
    from services.common.settings import StackSettings

    try:
        old = do_resend(StackSettings.from_env().database_url, row_id, force)
    except AllotmentError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"alert {row_id}: {old} -> pending")


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
