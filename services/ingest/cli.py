"""`allotment ingest` (the HTTP service), `allotment import` (history) and a key-hash helper."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from services.ingest.backfill import Checkpoint, ImportReport, Reader
    from services.ingest.keys import IngestKey
    from services.ingest.sources.base import Draft

DEFAULT_PORT = 8081


def ingest(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = DEFAULT_PORT,
) -> None:
    """Serve the ingest endpoints (keys from ALLOTMENT_INGEST_KEYS_FILE or _KEYS)."""
    import uvicorn

    uvicorn.run(
        "services.ingest.app:app_from_env", factory=True, host=host, port=port, log_level="info"
    )


def ingest_key_hash(key: Annotated[str, typer.Argument(help="The ingest key's value.")]) -> None:
    """Print the SHA-256 to put in the keys file as key_sha256."""
    from services.common.key_digest import hash_key

    typer.echo(hash_key(key))


def import_history(
    location: Annotated[str, typer.Argument(help="A file path, or a PostgreSQL DSN.")],
    source: Annotated[
        str, typer.Option("--from", help="litellm-spendlogs | helicone | jsonl")
    ] = "jsonl",
    tenant: Annotated[str | None, typer.Option(help="Tenant the history belongs to.")] = None,
    key_id: Annotated[
        str | None, typer.Option(help="Use this configured ingest key's tenant and attribution.")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file to resume from.")] = None,
    restart: Annotated[
        bool,
        typer.Option(
            help="Forget the checkpoint, start over (past the dedupe window: counted twice)."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 500,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Import usage history; resumable (checkpoint) and idempotent (derived event ids)."""
    from services.ingest import backfill

    if source not in backfill.SOURCES:
        raise typer.BadParameter(
            f"must be one of {', '.join(backfill.SOURCES)}", param_hint="--from"
        )
    key = _import_key(tenant, key_id)
    reader: backfill.Reader
    if source == "litellm-spendlogs":
        reader = backfill.SpendLogsReader(location, batch_size)
        default_checkpoint = Path(f".allotment-import-{backfill.input_id(source, location)}.json")
    else:
        reader = backfill.FileReader(Path(location), batch_size)
        default_checkpoint = Path(f"{location}.allotment-checkpoint")
    marker = backfill.Checkpoint(
        checkpoint or default_checkpoint, backfill.input_id(source, location)
    )
    if restart:
        marker.clear()
    report = asyncio.run(_run(reader, backfill.SOURCES[source], key, marker, progress))
    if report.already_done:
        typer.echo(
            f"already imported, nothing new (checkpoint {marker.path}); --restart imports it "
            "again, counted again once the pipeline's dedupe window (7 days by default) is past"
        )
        return
    for cursor, rejection in report.rejected[:20]:
        typer.echo(
            f"rejected after {cursor}: record {rejection.index}: "
            f"{rejection.field}: {rejection.rule}",
            err=True,
        )
    typer.echo(f"imported {report.accepted} events, rejected {len(report.rejected)}")


def _import_key(tenant: str | None, key_id: str | None) -> IngestKey:
    from services.ingest.keys import IngestKey, load_keys

    if key_id:
        key = load_keys().by_id(key_id)
        if key is None:
            raise typer.BadParameter("is not a configured ingest key", param_hint="--key-id")
        return key
    if not tenant:
        raise typer.BadParameter("give --tenant or --key-id", param_hint="--tenant")
    return IngestKey("import", tenant, "0" * 64)


async def _run(
    reader: Reader,
    to_draft: Callable[[Any], Draft | None],
    key: IngestKey,
    marker: Checkpoint,
    progress: bool,
) -> ImportReport:
    from rich.progress import Progress

    from services.common.settings import StackSettings
    from services.ingest.backfill import run_import
    from services.ingest.publisher import KafkaUsageSink

    settings = StackSettings.from_env()
    sink = KafkaUsageSink(settings.kafka_bootstrap, settings.topic_prefix)
    try:
        with Progress(disable=not progress) as bar:
            task = bar.add_task("importing", total=None)

            def advance(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            return await run_import(reader, to_draft, key, sink, marker, advance)
    finally:
        await sink.stop()


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("import")(import_history)
    app.command("ingest-key-hash")(ingest_key_hash)
