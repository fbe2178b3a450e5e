"""PostgreSQL plumbing shared by every read model: building an engine, migrating a database.

Nothing here runs at import time: a service's composition root calls `make_engine` when it
starts, and `deploy/stack up` and the tests call `migrate` on the database they use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine

from schemas.errors import AllotmentError

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "deploy" / "alembic.ini"


class MigrationsNotFound(AllotmentError):
    """The Alembic configuration is not where the repository keeps it (not a source checkout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"no Alembic configuration at {path}; run from a source checkout")


def make_engine(url: str, **options: Any) -> Engine:
    """An engine for `url`; connections are checked before use, so a restarted server is fine."""
    options.setdefault("pool_pre_ping", True)
    return create_engine(url, **options)


def migrate(url: str, target: str = "heads") -> None:
    """Upgrade the database at `url` to `target` (every branch head by default)."""
    from alembic import command
    from alembic.config import Config

    if not ALEMBIC_INI.is_file():
        raise MigrationsNotFound(ALEMBIC_INI)
    config = Config(str(ALEMBIC_INI))
    config.attributes["database_url"] = url
    command.upgrade(config, target)
