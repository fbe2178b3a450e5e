"""What the API and warehouse tests share: the API in-process, the projection, keys, topics.

The API runs in this process through httpx's ASGI transport with its lifespan entered, so it
publishes to the real broker and reads the real database. The warehouse consumer is stepped
explicitly (`project()`), so a test knows when the read models caught up.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import uvicorn
from fakes.kafka_io import send_events
from fastapi import FastAPI
from sqlalchemy import Engine, select

from schemas.base import Event
from schemas.codec import decode
from schemas.topics import TopicSpec
from services.api.app import create_app
from services.api.auth import Role, create_key
from services.common.db import make_engine
from services.common.kafka import read_from_start
from services.common.settings import StackSettings
from services.warehouse import tables as t
from services.warehouse.consumer import WarehouseConsumer


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def spec(total: int, parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": extra.pop("name", "budget"),
        "limits": {"total_tokens": total},
        "parent": parent,
        **extra,
    }


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    engine: Engine
    bootstrap: str
    prefix: str
    warehouse: WarehouseConsumer

    def key(self, role: Role, tenants: Iterable[str], principal: str = "tester") -> dict[str, str]:
        secret = create_key(self.engine, unique(principal), role, list(tenants))
        return {"Authorization": f"Bearer {secret}"}

    async def project(self) -> int:
        return await self.warehouse.catch_up()

    async def produce(self, spec: TopicSpec, events: Iterable[tuple[str, Event]]) -> None:
        topic = spec.name(self.prefix)
        await send_events(self.bootstrap, ((topic, key, event) for key, event in events))

    async def read_topic(self, spec: TopicSpec) -> list[Event]:
        """Every committed event on the topic, partition by partition."""
        found: list[Event] = []
        await read_from_start(
            self.bootstrap,
            spec.name(self.prefix),
            spec.partitions,
            lambda value: found.append(decode(value or b"")),
            isolation_level="read_committed",
        )
        return found

    def rows(self, table: Any, tenants: Iterable[str]) -> list[dict[str, Any]]:
        """All rows of a read model for these tenants, in primary-key order."""
        order = list(table.primary_key.columns)
        stmt = select(table).where(table.c.tenant.in_(list(tenants))).order_by(*order)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]


@asynccontextmanager
async def api_harness(
    kafka_bootstrap: str,
    topic_prefix: str,
    database_url: str,
    clock: Callable[[], datetime] | None = None,
    rebalance_every: float | None = None,
) -> AsyncIterator[Harness]:
    settings = StackSettings(kafka_bootstrap, database_url, topic_prefix)
    app = create_app(settings, clock, rebalance_every=rebalance_every)
    engine = make_engine(database_url)
    warehouse = WarehouseConsumer(engine, kafka_bootstrap, topic_prefix)
    await warehouse.start()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield Harness(app, client, engine, kafka_bootstrap, topic_prefix, warehouse)
    finally:
        await warehouse.stop()
        engine.dispose()


ALL_TABLES = [
    t.budgets,
    t.period_usage,
    t.daily_usage,
    t.thresholds,
    t.policies,
    t.forecasts,
    t.audit_log,
]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on a free local port in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
