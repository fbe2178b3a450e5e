"""Fixtures for the real stack that `bash deploy/stack up` starts, and the hypothesis profile.

A test that needs Kafka or PostgreSQL fails, with the command to run, when the stack is down:
it is never skipped. Each test gets its own topic prefix; each session its own database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from sqlalchemy import Engine, make_url, text

from services.common.settings import StackSettings

settings.register_profile("default", max_examples=200, deadline=None)
settings.load_profile("default")

T = TypeVar("T")
STACK_HINT = "start the stack with `bash deploy/stack up` (see README)"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop in a worker thread.

    A sync fixture may be set up while pytest-asyncio owns the thread's event loop; a thread of
    its own keeps the two from touching each other.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _list_topics(bootstrap: str) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await asyncio.wait_for(admin.start(), 20)
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def stack_settings() -> StackSettings:
    return StackSettings.from_env()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: StackSettings) -> str:
    """The broker's bootstrap address, checked with a metadata request."""
    bootstrap = stack_settings.kafka_bootstrap
    try:
        run_async(_list_topics(bootstrap))
    except Exception as exc:
        pytest.fail(f"Kafka does not answer at {bootstrap} ({exc!r}): {STACK_HINT}", False)
    return bootstrap


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> Iterator[str]:
    """A prefix of this test's own, with every topic of `schemas.topics.ALL` created under it."""
    from schemas.topics import ALL
    from services.common.kafka import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:8]}"
    run_async(ensure_topics(kafka_bootstrap, prefix))
    yield prefix
    run_async(_delete_topics(kafka_bootstrap, [spec.name(prefix) for spec in ALL]))


@pytest.fixture(scope="session")
def database_url(stack_settings: StackSettings) -> Iterator[str]:
    """A fresh database for this test session, migrated to heads; dropped at the end."""
    from services.common.db import make_engine, migrate

    server = make_engine(
        stack_settings.database_url, isolation_level="AUTOCOMMIT", pool_pre_ping=False
    )
    name = f"allotment_test_{uuid.uuid4().hex[:8]}"
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        server.dispose()
        where = make_url(stack_settings.database_url).render_as_string(hide_password=True)
        pytest.fail(f"PostgreSQL refused at {where} ({exc!r}): {STACK_HINT}", False)
    url = (
        make_url(stack_settings.database_url)
        .set(database=name)
        .render_as_string(hide_password=False)
    )
    try:
        migrate(url)
        yield url
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the session's database. Tests share it: use your own tenants and keys."""
    from services.common.db import make_engine

    eng = make_engine(database_url)
    yield eng
    eng.dispose()
