"""The delivery loop: claim due outbox rows, send each through its channel, record the outcome.

A final outcome (delivered, or abandoned) is first published as an event on
`alert-deliveries` (acks=all) and only then recorded in the outbox, so the topic never misses
an outcome the outbox holds. While the broker does not acknowledge, the row stays `sending`
and its lease is renewed; the publish is retried, and the receiver is not asked again. A crash
after the publish and before the outbox commit repeats the delivery and its event, with the
same alert id.

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
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from services.alerts import outbox
from services.alerts.channels import Delivery, deliver
from services.alerts.config import AlertsConfig, DeliveryTuning
from services.alerts.errors import AlertConfigError, DeliveryFailed
from services.alerts.outcomes import Final, outcome_event
from services.alerts.payload import with_id
from services.alerts.publisher import OutcomeNotPublished, Publishes

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
        publisher: Publishes,
        on_outcome: Outcome = lambda _t, _o: None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.config = config
        self.tuning = config.delivery
        self.source = source
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Keep up to `batch_size` deliveries in flight; claim more as each one finishes.

        A slow receiver holds only its own slots, never the others' deliveries. On stop, the
        deliveries in flight are finished and recorded before returning. Nothing is claimed
        before `ready` is set: the consumer sets it once the outcomes already on
        `alert-deliveries` are folded into the outbox, so none of them is sent again.
        """
        while ready is not None and not (ready.is_set() or stop.is_set()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), self.tuning.poll_seconds)
        timeout = httpx.Timeout(self.tuning.request_timeout_seconds)
        inflight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                while not stop.is_set():
                    free = self.tuning.batch_size - len(inflight)
                    claimed_at = asyncio.get_running_loop().time()  # no later than the lease
                    rows = await self._claim_safely(free) if free > 0 else []
                    for row in rows:
                        work = self._deliver_one(client, row, stop, claimed_at)
                        task = asyncio.create_task(work)
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

    async def _deliver_one(
        self,
        client: httpx.AsyncClient,
        row: outbox.ClaimedRow,
        stop: asyncio.Event,
        claimed_at: float,
    ) -> None:
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
            receipt = await deliver(delivery, client, self.tuning.request_timeout_seconds)
        except AlertConfigError as exc:
            await self._settle(row, Final("misconfigured", str(exc)), stop, claimed_at)
        except DeliveryFailed as exc:
            if exc.retryable and row.attempts < self.tuning.max_attempts:
                delay = backoff_delay(row.attempts, self.tuning, self.rng.random())
                delay = max(delay, min(exc.retry_after or 0.0, self.tuning.max_delay_seconds))
                await asyncio.to_thread(self._finish, row, "retry", delay, str(exc))
            else:
                given_up = Final("attempts_exhausted" if exc.retryable else "rejected", str(exc))
                await self._settle(row, given_up, stop, claimed_at)
        except Exception as exc:  # an adapter bug must not kill the loop; the row is kept
            log.exception("delivery of alert %d crashed", row.id)
            delay = backoff_delay(row.attempts, self.tuning, self.rng.random())
            await asyncio.to_thread(self._finish, row, "retry", delay, repr(exc))
        else:
            await self._settle(row, Final(None, receipt), stop, claimed_at)

    async def _settle(
        self, row: outbox.ClaimedRow, final: Final, stop: asyncio.Event, claimed_at: float
    ) -> None:
        """Publish the final outcome, then record it; while the broker refuses, hold the row.

        The row's lease is renewed (fenced by the attempt) before a publish when a third of it
        has passed, and after every failed publish. A publish and a pause each last at most a
        third of the lease, so no other worker takes the row over and sends it again while this
        one waits for Kafka. If the lease was lost anyway, the new holder owns the outcome and
        this one gives up. On stop the row is left `sending`: its lease runs out, and a later
        attempt delivers and publishes it again.
        """
        loop = asyncio.get_running_loop()
        third = self.tuning.lease_seconds / 3
        at = datetime.now(UTC)
        event = outcome_event(row, final, at)
        delay = min(self.tuning.poll_seconds, third)
        leased_at = claimed_at
        while True:
            if loop.time() - leased_at > third:
                leased_at = loop.time()
                if not await asyncio.to_thread(self._renew, row):
                    return
            try:
                await self.publisher.publish(event)
                break
            except OutcomeNotPublished as exc:
                log.warning("alert %d: %s; the row is held and the publish retried", row.id, exc)
            if stop.is_set():
                return
            leased_at = loop.time()
            if not await asyncio.to_thread(self._renew, row):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, third)
        await asyncio.to_thread(self._finish, row, final.state, 0.0, final.detail, at)

    def _renew(self, row: outbox.ClaimedRow) -> bool:
        """False only when the fence says another worker holds the row now; if PostgreSQL is
        away the publish goes ahead (recording it will fail and the row is delivered again)."""
        try:
            with self.engine.begin() as conn:
                held = outbox.renew_lease(conn, row.id, row.attempts, self.tuning.lease_seconds)
        except DBAPIError as exc:
            log.warning("alerts: renewing the lease of alert %d failed: %s", row.id, exc)
            return True
        if not held:
            log.warning("alert %d: lease lost before its outcome was published", row.id)
        return held

    def _finish(
        self,
        row: outbox.ClaimedRow,
        outcome: str,
        delay: float,
        error: str,
        at: datetime | None = None,
    ) -> None:
        try:
            self._record(row, outcome, delay, error, at)
        except DBAPIError as exc:  # the row stays `sending`; its lease runs out, it is retried
            log.warning("alerts: recording %s for alert %d failed: %s", outcome, row.id, exc)
        self.on_outcome(row.channel_type, outcome)

    def _record(
        self, row: outbox.ClaimedRow, outcome: str, delay: float, error: str, at: datetime | None
    ) -> None:
        with self.engine.begin() as conn:
            if outcome == "delivered":
                ok = outbox.mark_delivered(conn, row.id, row.attempts, at or datetime.now(UTC))
            elif outcome == "retry":
                ok = outbox.mark_retry(conn, row.id, row.attempts, delay, error)
            else:
                ok = outbox.mark_failed(conn, row.id, row.attempts, error)
        if not ok:  # another claim holds it, or its outcome was already read from the topic
            log.warning("alert %d: not recording %s: the row has moved on", row.id, outcome)
        if outcome != "delivered":
            log.warning("alert %d via %s: %s (%s)", row.id, row.channel, outcome, error)
