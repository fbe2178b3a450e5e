"""`allotment proxy` (serve the enforcement proxy) and `allotment proxy-hash-key`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def proxy(
    host: Annotated[
        str | None, typer.Option(help="Listen address (ALLOTMENT_PROXY_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (ALLOTMENT_PROXY_PORT, 8080).")
    ] = None,
    keys_file: Annotated[
        Path | None, typer.Option(help="Virtual keys, YAML or JSON (ALLOTMENT_PROXY_KEYS_FILE).")
    ] = None,
    spool_dir: Annotated[
        Path | None, typer.Option(help="Durable usage spool (ALLOTMENT_PROXY_SPOOL_DIR).")
    ] = None,
    fail_closed: Annotated[
        bool, typer.Option(help="Refuse with 503 until policies are caught up (default: open).")
    ] = False,
) -> None:
    """Serve the OpenAI/Anthropic-compatible enforcement proxy."""
    import logging

    import uvloop

    from services.proxy.server import run
    from services.proxy.settings import ProxySettings

    overrides: dict[str, object] = {}
    for name, value in (
        ("host", host),
        ("port", port),
        ("keys_file", keys_file),
        ("spool_dir", spool_dir),
    ):
        if value is not None:
            overrides[name] = value
    if fail_closed:
        overrides["fail_open"] = False
    settings = ProxySettings.from_env(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    typer.echo(f"allotment proxy on http://{settings.host}:{settings.port}")
    uvloop.run(run(settings))


def hash_key(secret: Annotated[str, typer.Argument(help="The virtual key to hash.")]) -> None:
    """Print the sha256 form of a virtual key, as the keys file stores it."""
    from services.common.key_digest import hash_key as digest

    typer.echo(digest(secret))


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
    app.command("proxy-hash-key")(hash_key)
