"""Auto-rebalance on a timer, inside the API process (the single writer of config events).

Every `every` seconds it runs `Commands.rebalance` for each tenant that has a tree. Before the
rule's point of the period nothing moves; after it, each child moves at most once per
(period, metric) because the move ids are deterministic, so running often is harmless.
Consumption comes from the read models, so a move reflects usage up to the projection's lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from schemas.errors import AllotmentError
from services.api.deps import Services
from services.api.routes_allocation import read_consumption

log = logging.getLogger(__name__)
ACTOR = "auto-rebalance"


async def rebalance_all(svc: Services) -> int:
    """One pass over every tenant with a tree; returns how many moves it published."""
    consumption = read_consumption(svc)
    tenants = sorted(
        {b.tenant for b in svc.state.index if not b.retired and b.spec.parent is not None}
    )
    moved = 0
    for tenant in tenants:
        try:
            moves = await svc.commands.rebalance(
                ACTOR, tenant, consumption, svc.clock(), "scheduled auto-rebalance"
            )
        except AllotmentError as exc:
            log.warning("auto-rebalance of tenant %s failed: %s", tenant, exc)
            continue
        moved += len(moves)
    return moved


async def run(svc: Services, every: float, stop: asyncio.Event) -> None:
    """Rebalance every `every` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            await rebalance_all(svc)
        except Exception:
            log.exception("auto-rebalance pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
