"""The ingest service's composition root: keys, the Kafka sink and the routes, built at start.

`create_app` takes its dependencies (tests pass their own sink or key ring); `app_from_env`
reads the stack settings and the key ring from the environment, for `allotment ingest` and
`uvicorn --factory services.ingest.app:app_from_env`. Nothing connects at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.settings import StackSettings
from services.ingest.keys import KeyRing, load_keys
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import KafkaUsageSink, UsageSink
from services.ingest.routes import IngestRoutes


def create_app(keys: KeyRing, sink: UsageSink) -> FastAPI:
    """An ingest app over the given key ring and sink; the sink is stopped on shutdown."""
    metrics = IngestMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        start = getattr(sink, "start", None)
        if start is not None:
            await start()
        try:
            yield
        finally:
            await sink.stop()

    app = FastAPI(title="Allotment ingest", lifespan=lifespan)
    app.include_router(IngestRoutes(keys, sink, metrics).router())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """Build the app from ALLOTMENT_* settings and the configured ingest keys."""
    settings = StackSettings.from_env()
    sink = KafkaUsageSink(settings.kafka_bootstrap, settings.topic_prefix)
    return create_app(load_keys(), sink)
