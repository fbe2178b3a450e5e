"""Publishing config events: acknowledged by the broker before the API answers 2xx.

Every config event goes to `budget-events` (never compacted: the source of truth and the audit
trail, keyed by tenant so a tenant's events keep their order). Budget lifecycle events also go
to the compacted `budgets` topic (keyed by budget id; the pipeline's global table). Both sends are
one Kafka transaction, so a reader with `read_committed` never sees one without the other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import encode
from schemas.errors import AllotmentError
from schemas.topics import BUDGET_EVENTS, BUDGETS


class PublishFailed(AllotmentError):
    """The broker did not acknowledge the write; nothing was accepted (the API answers 503)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the event log did not accept the write: {reason}")


class Publisher:
    """One transactional producer; transactions run one at a time."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=f"allotment-api-{self.prefix}-{uuid.uuid4().hex}",
            enable_idempotence=True,
            acks="all",
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def restart(self) -> None:
        """A new producer (and transactional id) after a failure that may have left the old one
        unusable; errors are left to the next publish, which answers 503 again."""
        try:
            await self.stop()
            await self.start()
        except KafkaError:
            self._producer = None

    async def publish(self, events: Sequence[Event]) -> None:
        """Write `events` atomically; returns only once the transaction committed."""
        producer = self._producer
        if producer is None:
            raise PublishFailed("the publisher is not started")
        audit = BUDGET_EVENTS.name(self.prefix)
        mirror = BUDGETS.name(self.prefix)
        async with self._lock:
            try:
                async with producer.transaction():
                    for event in events:
                        tenant: str = getattr(event, "tenant")  # noqa: B009 - every config event has one
                        value = encode(event)
                        await producer.send(audit, value, key=tenant.encode())
                        if isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
                            await producer.send(mirror, value, key=event.budget_id.encode())
            except KafkaError as exc:
                raise PublishFailed(type(exc).__name__) from None
