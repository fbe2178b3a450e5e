"""Composition root of the alerts service: builds the engine, telemetry and loops at start.

`run` starts the topic consumer, the delivery loop (with the producer of its outcome events),
a small outbox gauge refresher and the Prometheus `/metrics` endpoint, and stops them all on
SIGTERM/SIGINT or when `stop` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Engine

from services.alerts import facts, outbox
from services.alerts.config import AlertsConfig, load_config
from services.alerts.consumer import BatchResult, consume
from services.alerts.delivery import DeliveryLoop
from services.alerts.errors import AlertConfigError
from services.alerts.payload import BudgetView
from services.alerts.publisher import OutcomePublisher
from services.alerts.telemetry import Telemetry
from services.common.settings import StackSettings, env_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertsSettings:
    """Environment of the alerts service, read once at start-up."""

    stack: StackSettings
    config_path: str
    metrics_host: str
    metrics_port: int
    otlp_endpoint: str | None
    otlp_interval_ms: int

    @classmethod
    def from_env(cls) -> AlertsSettings:
        path = os.environ.get("ALLOTMENT_ALERTS_CONFIG", "")
        if not path:
            raise AlertConfigError("ALLOTMENT_ALERTS_CONFIG", "must name the routing config file")
        number = partial(env_int, os.environ, invalid=AlertConfigError)
        endpoint = os.environ.get("ALLOTMENT_ALERTS_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return cls(
            stack=StackSettings.from_env(),
            config_path=path,
            metrics_host=os.environ.get("ALLOTMENT_ALERTS_METRICS_HOST", "127.0.0.1"),
            metrics_port=number("ALLOTMENT_ALERTS_METRICS_PORT", 9466),
            otlp_endpoint=endpoint or None,
            otlp_interval_ms=number("ALLOTMENT_ALERTS_OTLP_INTERVAL_MS", 10_000),
        )


async def run(
    settings: AlertsSettings, stop: asyncio.Event | None = None, install_signals: bool = True
) -> None:
    """Run until SIGTERM/SIGINT (when `install_signals`) or until `stop` is set."""
    from prometheus_client import start_http_server

    from services.common.db import make_engine
    from services.common.kafka import ensure_topics

    config = load_config(settings.config_path)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT) if install_signals else ():
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    prefix = settings.stack.topic_prefix
    await ensure_topics(settings.stack.kafka_bootstrap, prefix)  # a fresh stack has none yet
    # One publish may take a third of a lease: the loop renews the lease between tries.
    publish_timeout = min(10.0, config.delivery.lease_seconds / 3)
    publisher = OutcomePublisher(settings.stack.kafka_bootstrap, prefix, publish_timeout)
    engine = make_engine(settings.stack.database_url)
    telemetry = Telemetry(settings.otlp_endpoint, settings.otlp_interval_ms)
    server, _ = start_http_server(
        settings.metrics_port, settings.metrics_host, registry=telemetry.registry
    )
    log.info("alerts: prefix %s, metrics on :%d", prefix, server.server_port)
    print(
        f"alerts: metrics on http://{settings.metrics_host}:{server.server_port}/metrics",
        flush=True,
    )
    try:
        await publisher.start()
        views = await asyncio.to_thread(_views, engine, prefix)
        for budget_id, (tenant, view) in views.items():
            telemetry.set_budget(tenant, budget_id, view)
        delivery = DeliveryLoop(engine, config, prefix, publisher, telemetry.delivery_outcome)
        caught_up = asyncio.Event()  # outcomes on the topic are in the outbox: claims may start
        tasks = [
            asyncio.create_task(
                consume(
                    engine,
                    settings.stack.kafka_bootstrap,
                    prefix,
                    config,
                    stop,
                    lambda r: _report(telemetry, r),
                    caught_up,
                )
            ),
            asyncio.create_task(delivery.run(stop, caught_up)),
            asyncio.create_task(_refresh_gauges(engine, telemetry, prefix, stop)),
        ]
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        # Deliveries in flight may finish and be recorded; whatever is still busy after that
        # (a consumer waiting on Kafka) is cancelled: its batch was not committed, so nothing
        # is lost.
        grace = config.delivery.request_timeout_seconds + 5
        _, busy = await asyncio.wait(tasks, timeout=grace)
        for task in busy:
            task.cancel()
        results = await asyncio.gather(*tasks, stopped, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result
    finally:
        server.shutdown()
        await asyncio.to_thread(telemetry.shutdown)
        engine.dispose()
        await publisher.stop()


def _report(telemetry: Telemetry, result: BatchResult) -> None:
    telemetry.enqueued.inc(result.enqueued)
    telemetry.skipped.inc(result.skipped)
    for event, view in result.events:
        telemetry.record_event(event, view)


async def _refresh_gauges(
    engine: Engine, telemetry: Telemetry, prefix: str, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        counts = await asyncio.to_thread(_counts, engine, prefix)
        telemetry.set_outbox_counts(counts)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)


def _views(engine: Engine, prefix: str) -> dict[str, tuple[str, BudgetView]]:
    with engine.connect() as conn:
        return facts.all_views(conn, prefix)


def _counts(engine: Engine, prefix: str) -> dict[str, int]:
    with engine.connect() as conn:
        return outbox.count_by_state(conn, prefix)


def resend(database_url: str, row_id: int, force: bool = False) -> str:
    """Queue one outbox row again (by hand); returns the state it had."""
    from services.common.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            return outbox.resend(conn, row_id, force)
    finally:
        engine.dispose()


def load(settings: AlertsSettings) -> AlertsConfig:
    return load_config(settings.config_path)
