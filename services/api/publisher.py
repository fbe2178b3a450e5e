"""Publishing config events: acknowledged by the broker before the API answers 2xx.

Every config event goes to `budget-events` (never compacted: the source of truth and the audit
trail, keyed by tenant so a tenant's events keep their order). Budget lifecycle events are then
mirrored to the compacted `budgets` topic (keyed by budget id), the pipeline's global table.

No Kafka transaction spans the two: Faust restores a global table by reading its topic up to
the high watermark, and a transaction's commit marker at the end of `budgets` is never
delivered as a record, so the workers' recovery would wait for it forever. The source of truth
is written first; a mirror write that fails is repaired from it (`repair_mirror`) when the API
starts and after every failed write, so the mirror converges on `budget-events`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import decode, encode
from schemas.errors import AllotmentError
from schemas.topics import BUDGET_EVENTS, BUDGETS
from services.common.kafka import read_from_start, start_producer

LIFECYCLE = (BudgetDefined, BudgetAmended, BudgetRetired)


class PublishFailed(AllotmentError):
    """The broker did not acknowledge the write (the API answers 503; the outcome is unknown)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the event log did not accept the write: {reason}")


class Publisher:
    """One idempotent producer; writes run one at a time, so a tenant's events keep order."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._producer = await start_producer(self.bootstrap)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def restart(self) -> None:
        """A new producer after a failure that may have left the old one unusable; errors are
        left to the next publish, which answers 503 again."""
        try:
            await self.stop()
            await self.start()
        except KafkaError:
            self._producer = None

    async def publish(self, events: Sequence[Event]) -> None:
        """Write `events` to the source of truth, then mirror the lifecycle ones; returns only
        when the broker acknowledged every record."""
        producer = self._producer
        if producer is None:
            raise PublishFailed("the publisher is not started")
        audit = BUDGET_EVENTS.name(self.prefix)
        mirror = BUDGETS.name(self.prefix)
        async with self._lock:
            try:
                sent = [
                    await producer.send(audit, encode(e), key=_tenant(e).encode()) for e in events
                ]
                await asyncio.gather(*sent)
                sent = [
                    await producer.send(mirror, encode(e), key=e.budget_id.encode())
                    for e in events
                    if isinstance(e, LIFECYCLE)
                ]
                await asyncio.gather(*sent)
            except KafkaError as exc:
                raise PublishFailed(type(exc).__name__) from None

    async def repair_mirror(self, latest: Mapping[str, Event]) -> int:
        """Re-send each budget's latest lifecycle event the `budgets` topic does not hold yet;
        returns how many it re-sent."""
        held = await _mirror_revisions(self.bootstrap, BUDGETS.name(self.prefix))
        missing = [
            e
            for budget_id, e in sorted(latest.items())
            if isinstance(e, LIFECYCLE) and held.get(budget_id, 0) < e.revision
        ]
        producer = self._producer
        if missing and producer is not None:
            async with self._lock:
                topic = BUDGETS.name(self.prefix)
                sent = [
                    await producer.send(topic, encode(e), key=e.budget_id.encode())
                    for e in missing
                    if isinstance(e, LIFECYCLE)
                ]
                await asyncio.gather(*sent)
        return len(missing)


def _tenant(event: Event) -> str:
    tenant: str = getattr(event, "tenant")  # noqa: B009 - every config event carries one
    return tenant


async def _mirror_revisions(bootstrap: str, topic: str) -> dict[str, int]:
    """The highest revision per budget id the mirror topic holds."""
    held: dict[str, int] = {}

    def note(value: bytes | None) -> None:
        try:
            event = decode(value or b"")
        except AllotmentError:
            return
        if isinstance(event, LIFECYCLE):
            held[event.budget_id] = max(held.get(event.budget_id, 0), event.revision)

    await read_from_start(bootstrap, topic, BUDGETS.partitions, note)
    return held
