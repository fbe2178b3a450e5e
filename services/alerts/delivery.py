"""The delivery loop: claim due outbox rows, send each through its channel, record the outcome.

Between the receiver's answer and the commit of `delivered` there is a window in which a
crash leaves the row `sending`; when its lease runs out another attempt is made. So delivery is
at least once, and each channel carries a stable key that makes a repeat harmless where the
receiver supports one (see the README of this package).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.alerts import outbox
from services.alerts.channels import Delivery, deliver
from services.alerts.config import AlertsConfig, DeliveryTuning
from services.alerts.errors import AlertConfigError, DeliveryFailed
from services.alerts.payload import with_id

log = logging.getLogger(__name__)
Outcome = Callable[[str, str], None]


def backoff_delay(attempt: int, tuning: DeliveryTuning, unit: float) -> float:
    """Exponential backoff with "equal jitter": half the capped step, plus up to half again.

    `unit` is a uniform draw from [0, 1); it is an argument so the schedule can be tested.
    """
    step: float = min(
        tuning.max_delay_seconds, tuning.base_delay_seconds * 2.0 ** max(0, attempt - 1)
    )
    return step / 2 + unit * step / 2


class DeliveryLoop:
    """Drains the outbox rows of one `source` (topic prefix)."""

    def __init__(
        self,
        engine: Engine,
        config: AlertsConfig,
        source: str,
        on_outcome: Outcome = lambda _t, _o: None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.tuning = config.delivery
        self.source = source
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to `batch_size` deliveries in flight; claim more as each one finishes.

        A slow receiver holds only its own slots, never the others' deliveries. On stop, the
        deliveries in flight are finished and recorded before returning.
        """
        timeout = httpx.Timeout(self.tuning.request_timeout_seconds)
        inflight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                while not stop.is_set():
                    free = self.tuning.batch_size - len(inflight)
                    rows = await self._claim_safely(free) if free > 0 else []
                    for row in rows:
                        task = asyncio.create_task(self._deliver_one(client, row))
                        inflight.add(task)
                        task.add_done_callback(inflight.discard)
                    if rows and len(rows) == free:
                        await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    elif not rows:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), self.tuning.poll_seconds)
            finally:
                if inflight:
                    await asyncio.gather(*inflight, return_exceptions=True)

    async def _claim_safely(self, limit: int) -> list[outbox.ClaimedRow]:
        try:
            return await asyncio.to_thread(self._claim, limit)
        except DBAPIError as exc:  # PostgreSQL away: nothing claimed, try again later
            log.warning("alerts: claiming failed: %s", exc)
            return []

    def _claim(self, limit: int) -> list[outbox.ClaimedRow]:
        with self.engine.begin() as conn:
            return outbox.claim_due(conn, self.source, limit, self.tuning.lease_seconds)

    async def _deliver_one(self, client: httpx.AsyncClient, row: outbox.ClaimedRow) -> None:
        try:
            channel = self.config.channel(row.channel)
            delivery = Delivery(
                row_id=row.id,
                delivery_id=row.delivery_id,
                channel=channel,
                kind=row.kind,
                action=row.action,
                budget_id=row.budget_id,
                period_key=row.period_key,
                payload=with_id(row.payload, row.delivery_id),
                attempt=row.attempts,
            )
            await deliver(delivery, client, self.tuning.request_timeout_seconds)
        except AlertConfigError as exc:
            await asyncio.to_thread(self._finish, row, "failed", 0.0, str(exc))
        except DeliveryFailed as exc:
            if exc.retryable and row.attempts < self.tuning.max_attempts:
                delay = backoff_delay(row.attempts, self.tuning, self.rng.random())
                delay = max(delay, min(exc.retry_after or 0.0, self.tuning.max_delay_seconds))
                await asyncio.to_thread(self._finish, row, "retry", delay, str(exc))
            else:
                await asyncio.to_thread(self._finish, row, "failed", 0.0, str(exc))
        except Exception as exc:  # an adapter bug must not kill the loop; the row is kept
            log.exception("delivery of alert %d crashed", row.id)
            delay = backoff_delay(row.attempts, self.tuning, self.rng.random())
            await asyncio.to_thread(self._finish, row, "retry", delay, repr(exc))
        else:
            await asyncio.to_thread(self._finish, row, "delivered", 0.0, "")

    def _finish(self, row: outbox.ClaimedRow, outcome: str, delay: float, error: str) -> None:
        try:
            self._record(row, outcome, delay, error)
        except DBAPIError as exc:  # the row stays `sending`; its lease runs out, it is retried
            log.warning("alerts: recording %s for alert %d failed: %s", outcome, row.id, exc)
        self.on_outcome(row.channel_type, outcome)

    def _record(self, row: outbox.ClaimedRow, outcome: str, delay: float, error: str) -> None:
        with self.engine.begin() as conn:
            if outcome == "delivered":
                ok = outbox.mark_delivered(conn, row.id, row.attempts)
            elif outcome == "retry":
                ok = outbox.mark_retry(conn, row.id, row.attempts, delay, error)
            else:
                ok = outbox.mark_failed(conn, row.id, row.attempts, error)
        if not ok:
            log.warning("alert %d: lease lost before recording %s", row.id, outcome)
        if outcome != "delivered":
            log.warning("alert %d via %s: %s (%s)", row.id, row.channel, outcome, error)
