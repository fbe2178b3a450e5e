"""Alembic environment: online migrations only, against one URL chosen by the caller.

The URL comes, first match wins, from `config.attributes["database_url"]` (set by
`services.common.db.migrate`, so tests migrate their own per-session database), from
`-x url=...` on the command line, from ALLOTMENT_DATABASE_URL, else the local default.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from services.common.settings import DEFAULT_DATABASE_URL

config = context.config

# Only the command line configures logging: called from a program (a test run, a service),
# Alembic must not replace that program's logging setup.
if config.cmd_opts is not None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "url"
    )
    return str(url or os.environ.get("ALLOTMENT_DATABASE_URL", DEFAULT_DATABASE_URL))


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=None)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
