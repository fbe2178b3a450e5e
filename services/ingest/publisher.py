"""The ingest edge's one door to Kafka: publish a batch, or fail it as a whole.

It wraps the shared envelope producer (`services.common.usage_producer`, acks=all, one envelope
per destination partition) and adds what an HTTP edge needs: the producer connects lazily and
reconnects after a failure, so the service starts while the broker is down and answers 503
until it is back; and a send that the broker does not acknowledge within `timeout_s` is a
`PublishUnavailable`, never a 2xx.

If a batch fails after some of its envelopes were acknowledged, the caller still gets 503 and
resends the whole batch. That is safe: event ids derive from the source's request ids, so the
resent copies are the same events and the pipeline's dedupe drops them. The one exception is
an event too large for the usage topic even alone (its properties can be large): resending
cannot help, so `EventsTooLarge` names those events once the others are acknowledged. An event
within our envelope cap that the topic still refuses (`TopicLimitTooLow`: a topic never aligned)
is the deployment's fault, not the record's: 503, so the client keeps it and resends once an
operator ran `allotment create-topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.topics import USAGE
from schemas.usage import UsageRecorded
from services.common.usage_producer import EventTooLarge, TopicLimitTooLow, UsageProducer
from services.ingest.errors import EventsTooLarge, IngestConfigError, PublishUnavailable

log = logging.getLogger(__name__)


class UsageSink(Protocol):
    """Where accepted usage goes. `publish` returns only once every event is durable."""

    async def publish(self, events: Sequence[UsageRecorded]) -> None: ...

    async def stop(self) -> None: ...


class KafkaUsageSink:
    """`UsageSink` over the shared `UsageProducer`, with lazy (re)connection and a deadline."""

    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str,
        timeout_s: float = 15.0,
        producer_factory: Callable[[str, str], UsageProducer] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._prefix = topic_prefix
        self._timeout_s = timeout_s
        self._factory = producer_factory or (lambda b, p: UsageProducer(b, p))
        self._producer: UsageProducer | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> UsageProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                producer = self._factory(self._bootstrap, self._prefix)
                try:
                    await asyncio.wait_for(producer.start(), self._timeout_s)
                except Exception as exc:  # whatever it is, "try later"
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise PublishUnavailable(f"cannot reach Kafka: {exc!r}") from None
                self._producer = producer
            return self._producer

    async def start(self) -> None:
        """Connect now if the broker answers; an unreachable broker is not fatal (the next
        publish retries), but a reachable one without the usage topic is a configuration
        error, refused at start rather than answered with slow 503s."""
        if await self._topic_missing():
            raise IngestConfigError(
                USAGE.name(self._prefix), "does not exist: run `allotment create-topics`"
            )
        with contextlib.suppress(PublishUnavailable):
            await self._connected()

    async def _topic_missing(self, attempts: int = 20) -> bool:
        """True only if a reachable broker keeps not listing the topic (a just-created topic
        may take a moment to reach the broker's metadata)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=5000)
        try:
            await asyncio.wait_for(admin.start(), self._timeout_s)
            for _ in range(attempts):
                topics = await asyncio.wait_for(admin.list_topics(), self._timeout_s)
                if USAGE.name(self._prefix) in topics:
                    return False
                await asyncio.sleep(0.25)
        except (KafkaError, OSError, TimeoutError):
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return True

    async def publish(self, events: Sequence[UsageRecorded]) -> None:
        if not events:
            return
        producer = await self._connected()
        restarts = producer.restarts
        try:
            await asyncio.wait_for(producer.send(events), self._timeout_s)
        except EventTooLarge as exc:  # the rest was acknowledged; the producer is fine
            raise EventsTooLarge(exc.sizes, exc.limit) from None
        except TopicLimitTooLow as exc:  # logged as an error by the producer, which is fine
            raise PublishUnavailable(f"Kafka did not acknowledge the batch: {exc}") from None
        except Exception as exc:  # whatever it is, unacknowledged: 503 (a 500 is not retried)
            log.warning("usage: %d events not acknowledged: %r", len(events), exc)
            await self._drop(producer, restarts)
            raise PublishUnavailable(f"Kafka did not acknowledge the batch: {exc!r}") from None

    async def _drop(self, producer: UsageProducer, restarts: int | None = None) -> None:
        """Forget and stop `producer`, so the next publish connects anew; unless it restarted
        its client since `restarts` was read: the failure may be the old client's, and other
        requests are sending through the new one."""
        async with self._lock:
            if restarts is not None and producer.restarts != restarts:
                return
            if self._producer is producer:
                self._producer = None
        with contextlib.suppress(Exception):
            await producer.stop()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._drop(self._producer)
