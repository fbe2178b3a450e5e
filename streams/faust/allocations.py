"""The worker's allocation book: every allocation fact of `budget-events`, folded, then followed.

Issue 4: draws, moves and reservations change a budget's effective limit, and the ledger and
policy stages compare consumption with that limit (`streams.allocation`). The facts live on
`budget-events` (keyed by tenant, never compacted or expired), so every worker reads the whole
topic from offset zero into its own `AllocationBook` and keeps following it.

Determinism under replay: a charge is never applied before the book has read `budget-events`
up to the end offsets it had when the worker started (`catch_up`, before Faust starts), so a
restarted worker never decides with an older book than the one the crashed worker had. A book
that is ahead (an allocation published after the charge was first applied) can only raise or
lower the limit a replayed charge sees; crossings already on the thresholds topic are not sent again
(`charging.py`), and a new one, if any, is what the current limits call for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.budgets import Metric
from schemas.codec import decode
from schemas.errors import AllotmentError
from schemas.topics import BUDGET_EVENTS
from streams.allocation import AllocationBook
from streams.budgets import Budget, BudgetIndex

log = logging.getLogger("allotment.allocations")


class AllocationFeed:
    """Reads `budget-events` into an `AllocationBook`: to the end first, then as it grows."""

    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str,
        budgets: Callable[[], BudgetIndex],
        book: AllocationBook | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = BUDGET_EVENTS.name(topic_prefix)
        self.partitions = BUDGET_EVENTS.partitions
        self.book = book or AllocationBook()
        self.budgets = budgets
        self.ready = asyncio.Event()
        self.touched: set[str] = set()
        """Tenants whose allocation changed since the pipeline last re-decided their policies."""
        self.applied = 0
        self.positions: dict[int, int] = {}

    def apply(self, value: bytes | None) -> None:
        """Fold one record of the topic; budget lifecycle events and bad records are skipped."""
        if not value:
            return
        try:
            event = decode(value)
        except AllotmentError as exc:
            log.error("budget-events record not readable", extra={"error": str(exc)})
            return
        if self.book.apply(event):
            self.applied += 1
            self.touched.add(str(getattr(event, "tenant", "")))

    async def wait_ready(self) -> None:
        await self.ready.wait()

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
        """A consumer on every partition of the topic, at the positions read so far."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            await consumer.start()
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, self.positions.get(tp.partition, 0))
            yield consumer, tps
        finally:
            await consumer.stop()

    async def catch_up(self) -> None:
        """Read from offset zero to the end offsets of now, then mark the book ready.

        The worker's composition root runs this before Faust starts, so no agent ever waits
        for the book: an agent that blocks while its stream fills up can lose fetched records
        in faust-streaming 0.15 (see `offset_guard.SkippedRecords`).
        """
        async with self._reading() as (consumer, tps):
            ends = await consumer.end_offsets(tps)
            while True:
                for tp in tps:
                    self.positions[tp.partition] = await consumer.position(tp)
                if all(self.positions[tp.partition] >= ends[tp] for tp in tps):
                    break
                await self._poll(consumer, tps)
        self.ready.set()
        log.info("allocation book caught up", extra={"events": self.applied})

    async def run(self) -> None:
        """Follow the topic from where `catch_up` stopped (catching up first if it did not run),
        for as long as the worker runs (a task)."""
        if not self.ready.is_set():
            await self.catch_up()
        async with self._reading() as (consumer, tps):
            while True:
                await self._poll(consumer, tps)

    async def _poll(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        batch = await consumer.getmany(*tps, timeout_ms=500, max_records=5000)
        for messages in batch.values():
            for message in messages:
                self.apply(message.value)

    def limits(self, budget: Budget, at: datetime) -> dict[Metric, int] | None:
        """`budget`'s effective limits at `at`, or None when its tenant moved nothing (then the
        spec's limits apply, and the ledger's hot path is unchanged)."""
        if budget.tenant not in self.book.tenants:
            return None
        specs = {b.budget_id: b.spec for b in self.budgets().live(budget.tenant)}
        if budget.budget_id not in specs:
            return None
        return self.book.limits_at(specs, budget.tenant, budget.budget_id, at)
