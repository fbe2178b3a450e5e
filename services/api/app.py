"""The API's composition root: `create_app` wires engine, producer and config state at start.

Nothing is built at import time. Domain errors become HTTP answers here and only here:
422 names field and rule, 409 a stale version or a taken id, 404 an unknown (or another
tenant's) budget, 401/403 a key that does not cover the request, 503 a write the broker did not
acknowledge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from schemas.errors import AllotmentError, InvalidEvent
from services.api import rebalancer
from services.api.auth import Forbidden, Unauthenticated
from services.api.commands import BudgetIdTaken, Commands, VersionConflict
from services.api.deps import Services
from services.api.publisher import Publisher, PublishFailed
from services.api.state import load_state
from services.common.db import make_engine
from services.common.kafka import ensure_topics
from services.common.settings import StackSettings
from services.warehouse.consumer import ProjectionBusy, WarehouseConsumer
from streams.allocation_tree import AllocationRejected
from streams.errors import BudgetAlreadyRetired, BudgetNotFound

log = logging.getLogger(__name__)

STATUS: list[tuple[type[AllotmentError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (BudgetNotFound, 404),
    (VersionConflict, 409),
    (BudgetIdTaken, 409),
    (BudgetAlreadyRetired, 409),
    (PublishFailed, 503),
    (AllocationRejected, 422),
    (InvalidEvent, 422),
]


def _error(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": detail, "errors": errors or []}, status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 422)
    items = getattr(exc, "errors", None)
    errors = [{"field": e.field, "rule": e.rule} for e in items] if isinstance(items, list) else []
    return _error(status, str(exc), errors)


def _join(path: str, named: str) -> str:
    """`spec.period` + `period.window_days` -> `spec.period.window_days`: a model's rule may name
    its field from the model's own level, which the location already ends with."""
    outer = path.split(".") if path else []
    inner = named.split(".")
    for k in range(min(len(outer), len(inner)), 0, -1):
        if outer[-k:] == inner[:k]:
            return ".".join(outer + inner[k:])
    return ".".join(outer + inner)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = []
    for err in exc.errors() if isinstance(exc, RequestValidationError) else []:
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else ""
        path = ".".join(loc[1:]) if where == "body" else ".".join(loc)
        rule = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            rule = "is required"
        elif err.get("type") == "extra_forbidden":
            rule = "is not a field of this request"
        head, sep, tail = rule.partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head:
            path, rule = _join(path, head), tail
        errors.append({"field": path or "(body)", "rule": rule})
    return _error(422, "the request breaks these rules", errors)


@asynccontextmanager
async def _projection(
    engine: Engine, settings: StackSettings, enabled: bool
) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    consumer = WarehouseConsumer(engine, settings.kafka_bootstrap, settings.topic_prefix)
    try:
        await consumer.start()
    except ProjectionBusy as exc:
        log.warning("not projecting in the API process: %s", exc)
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        await consumer.stop()


@asynccontextmanager
async def _rebalancer(svc: Services, every: float | None) -> AsyncIterator[None]:
    if not every:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(rebalancer.run(svc, every, stop))
    try:
        yield
    finally:
        stop.set()
        await task


def create_app(
    settings: StackSettings | None = None,
    clock: Callable[[], datetime] | None = None,
    run_projection: bool = False,
    rebalance_every: float | None = None,
) -> FastAPI:
    """The API app; the stack is reached when it starts (lifespan), not when this returns.

    With `run_projection` the warehouse consumer runs in the same process, so a single
    `allotment api` keeps its own read models up to date. With `rebalance_every` (seconds) the
    auto-rebalance rule runs on a timer in this process.
    """
    settings = settings or StackSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings.kafka_bootstrap, settings.topic_prefix)
        engine = make_engine(settings.database_url)
        publisher = Publisher(settings.kafka_bootstrap, settings.topic_prefix)
        await publisher.start()
        try:
            state = await load_state(settings.kafka_bootstrap, settings.topic_prefix)
            repaired = await publisher.repair_mirror(state.latest)
            if repaired:
                log.warning("re-sent %d budget events missing from the budgets topic", repaired)
            app.state.services = Services(
                engine=engine,
                state=state,
                commands=Commands(state, publisher),
                clock=clock or (lambda: datetime.now(UTC)),
            )
            async with (
                _projection(engine, settings, run_projection),
                _rebalancer(app.state.services, rebalance_every),
            ):
                yield
        finally:
            await publisher.stop()
            engine.dispose()

    app = FastAPI(
        title="Allotment API",
        version="1",
        description="Token budgets for LLM traffic: budgets, allocation, status and audit.",
        lifespan=lifespan,
    )
    from services.api import routes_allocation, routes_budgets, routes_reads

    # A budget id may hold "/" (`{budget_id:path}`): routes with a suffix after the id come
    # first, so GET /budgets/a/b/status is a status and not budget "a/b/status".
    app.include_router(routes_reads.router)
    app.include_router(routes_allocation.router)
    app.include_router(routes_budgets.router)
    app.add_exception_handler(AllotmentError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        return {"ok": True}

    return app
