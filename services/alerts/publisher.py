"""Puts delivery outcomes on `alert-deliveries`, acknowledged by every in-sync replica.

Kafka is the source of truth for alert deliveries as for every other fact (the outbox is a
work queue). The delivery loop therefore publishes an outcome before it records it in the
outbox: if the broker does not acknowledge, the row stays unfinished and nothing is lost.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.alerts import AlertOutcome
from schemas.codec import encode
from schemas.errors import AllotmentError
from schemas.topics import ALERT_DELIVERIES


class OutcomeNotPublished(AllotmentError):
    """The broker did not acknowledge an outcome in time; whether it holds it is unknown, so
    the caller publishes it again (readers dedupe by `alert_id`)."""

    def __init__(self, alert_id: str, cause: str) -> None:
        self.alert_id = alert_id
        self.cause = cause
        super().__init__(f"outcome of alert {alert_id} not acknowledged: {cause}")


class Publishes(Protocol):
    """What the delivery loop needs: one acknowledged write per outcome."""

    async def publish(self, event: AlertOutcome) -> None: ...


class OutcomePublisher:
    """One producer per alerts process, built by the composition root (`start()` connects).

    `timeout_seconds` bounds one publish, including the producer's own retries, so the
    delivery loop can renew its lease on the row in between.
    """

    def __init__(self, bootstrap: str, prefix: str, timeout_seconds: float = 10.0) -> None:
        self.topic = ALERT_DELIVERIES.name(prefix)
        self.timeout_seconds = timeout_seconds
        self._bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        from services.common.kafka import start_producer

        timeout_ms = max(1000, int(self.timeout_seconds * 1000))
        self._producer = await start_producer(
            self._bootstrap, request_timeout_ms=timeout_ms, linger_ms=0
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, event: AlertOutcome) -> None:
        """Return only once the broker acknowledged `event`; else raise `OutcomeNotPublished`."""
        producer = self._producer
        if producer is None:
            raise OutcomeNotPublished(event.alert_id, "the publisher is not started")
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.topic, encode(event), key=event.budget_id.encode()),
                self.timeout_seconds,
            )
        except (KafkaError, TimeoutError) as exc:
            raise OutcomeNotPublished(event.alert_id, repr(exc)) from None
