"""The `allotment` command. Each service registers its own commands from its `cli` module.

Registration imports only the command definitions; each command imports its service when it
runs, so `allotment --help` stays fast and no service is built at import time.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = [
    "services.common.cli",
    "services.alerts.cli",
    "services.proxy.cli",
    "services.ingest.cli",
    "streams.faust.cli",
    "services.api.cli",
    "services.warehouse.cli",
    "services.forecast.cli",
]

app = typer.Typer(help="Allotment: token budgets for LLM traffic.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Allotment: token budgets for LLM traffic."""


def build() -> typer.Typer:
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)
    return app


def main() -> None:
    build()()


if __name__ == "__main__":
    main()
