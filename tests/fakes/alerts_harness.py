"""Running the alerts service against the fake receivers: config, events in, service up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from fakes import alert_events as ev
from fakes.kafka_io import send_events
from schemas.alerts import AlertAbandoned, AlertDelivered, AlertOutcome
from schemas.base import Event
from schemas.codec import decode
from schemas.topics import ALERT_DELIVERIES, BUDGETS, THRESHOLDS, TopicSpec
from services.alerts.app import AlertsSettings, run
from services.common.kafka import read_from_start
from services.common.settings import StackSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # the hook signs with SECRET: 401
STEADY = 15.0
"""A lease no delivery outlives in these tests: no takeover, so exactly once on the topic."""
FAST = {
    "base_delay_seconds": 0.2,
    "max_delay_seconds": 1.0,
    "lease_seconds": 3.0,
    "request_timeout_seconds": 2.0,
    "poll_seconds": 0.1,
}


def write_config(
    path: Path,
    tenant: str,
    http_url: str,
    smtp_port: int | None = None,
    channels: Iterable[str] = ("slack", "pd", "hook"),
    rule: dict[str, Any] | None = None,
    **delivery: Any,
) -> Path:
    available: dict[str, dict[str, Any]] = {
        "slack": {"type": "slack", "name": "slack", "url": f"{http_url}/slack"},
        "pd": {
            "type": "pagerduty",
            "name": "pd",
            "routing_key": "test-routing-key",
            "url": f"{http_url}/pagerduty",
        },
        "hook": {"type": "webhook", "name": "hook", "url": f"{http_url}/webhook", "secret": SECRET},
        "mail": {
            "type": "email",
            "name": "mail",
            "host": "127.0.0.1",
            "port": smtp_port or 25,
            "sender": "allotment@example.test",
            "recipients": ["finance@example.test"],
        },
    }
    chosen = [available[name] for name in channels]
    config = {
        "api_base": "http://api.test:8000",
        "channels": chosen,
        "rules": [{"tenant": tenant, "channels": [c["name"] for c in chosen], **(rule or {})}],
        "delivery": {**FAST, **delivery},
        "stale_after_seconds": 0,  # the fixtures' events happened weeks ago
    }
    path.write_text(yaml.safe_dump(config))
    return path


def names() -> tuple[str, str]:
    """A tenant of the calling test's own, and its budget."""
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    return tenant, f"{tenant}-copilot"


async def crossings(bootstrap: str, prefix: str, tenant: str, leaf: str, *at: int) -> None:
    """The budget, then one crossing of each threshold in `at`."""
    events = [(THRESHOLDS, ev.crossed(tenant, leaf, t)) for t in at]
    await produce(bootstrap, prefix, [(BUDGETS, ev.budget(tenant, leaf)), *events])


async def produce(bootstrap: str, prefix: str, events: Iterable[tuple[TopicSpec, Event]]) -> None:
    """Put each event on its topic, keyed by its budget id (or else its tenant)."""
    await send_events(
        bootstrap,
        (
            (spec.name(prefix), str(getattr(e, "budget_id", None) or getattr(e, "tenant", "")), e)
            for spec, e in events
        ),
    )


def settings(
    bootstrap: str,
    database_url: str,
    prefix: str,
    config: Path,
    otlp: str | None = None,
    metrics_port: int = 0,
) -> AlertsSettings:
    return AlertsSettings(
        stack=StackSettings(bootstrap, database_url, prefix),
        config_path=str(config),
        metrics_host="127.0.0.1",
        metrics_port=metrics_port,
        otlp_endpoint=otlp,
        otlp_interval_ms=300,
    )


@contextlib.asynccontextmanager
async def service(alerts: AlertsSettings) -> AsyncIterator[asyncio.Task[None]]:
    """The service in this process, stopped (and its exporters flushed) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(alerts, stop, install_signals=False))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def subprocess_env(bootstrap: str, database_url: str, prefix: str, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ALLOTMENT_KAFKA_BOOTSTRAP": bootstrap,
        "ALLOTMENT_DATABASE_URL": database_url,
        "ALLOTMENT_TOPIC_PREFIX": prefix,
        "ALLOTMENT_ALERTS_CONFIG": str(config),
        "ALLOTMENT_ALERTS_METRICS_PORT": "0",
    }


async def until(
    predicate: Any, timeout: float = 30.0, alive: asyncio.Task[None] | None = None
) -> bool:
    """Poll `predicate` (sync) without blocking the loop; a bound, not a timing assertion.

    With `alive`, a service task that ended early raises its error here instead of waiting.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if alive is not None and alive.done():
            alive.result()
            raise AssertionError("the alerts service stopped early")
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.1)
    return bool(await asyncio.to_thread(predicate))


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    """The rows of one read-only statement, on an engine of its own (closed again)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def outbox(database_url: str, prefix: str) -> list[tuple[str, str, int]]:
    """(channel, state, attempts) of every outbox row the alerts service wrote for `prefix`."""
    sql = "SELECT channel, state, attempts FROM alert_outbox WHERE source = :s ORDER BY channel"
    return [(r.channel, r.state, r.attempts) for r in query(database_url, sql, s=prefix)]


async def outcomes(bootstrap: str, prefix: str) -> list[AlertOutcome]:
    """Every event on `alert-deliveries` from offset zero, in log order per partition."""
    found: list[AlertOutcome] = []

    def keep(value: bytes | None) -> None:
        event = decode(value or b"")
        if not isinstance(event, AlertDelivered | AlertAbandoned):
            raise AssertionError(f"not an alert outcome on alert-deliveries: {event!r}")
        found.append(event)

    topic = ALERT_DELIVERIES.name(prefix)
    await read_from_start(bootstrap, topic, ALERT_DELIVERIES.partitions, keep)
    return found


def finished_rows(database_url: str, prefix: str) -> dict[str, dict[str, Any]]:
    """delivery_id -> the outbox row, for every row of `prefix` in a final state."""
    sql = "SELECT * FROM alert_outbox WHERE source = :s AND state IN ('delivered', 'failed')"
    return {r.delivery_id: dict(r._asdict()) for r in query(database_url, sql, s=prefix)}
