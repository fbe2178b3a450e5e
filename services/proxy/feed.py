"""Keeps the policy cache current: the `budgets`, `policies` and `thresholds` topics, from offset
zero, then followed for as long as the proxy runs.

`budgets` and `policies` are compacted (latest per budget) and `thresholds` holds each crossing
once, so reading them from the start rebuilds the cache; the proxy holds no state of its own
that a restart could lose. Crossings matter because they carry consumption before any policy
changes (see `BudgetState.apply_crossing`). The cache counts as
caught up once every partition has been read up to the end offsets seen at start. Until then the
proxy is fail-open (or refuses with 503, when so configured). A broker that is not there at boot
is retried in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import decode
from schemas.errors import AllotmentError
from schemas.signals import PolicyChanged, ThresholdCrossed
from schemas.topics import BUDGETS, POLICIES, THRESHOLDS
from services.proxy.enforcement import PolicyCache

log = logging.getLogger(__name__)


class PolicyFeed:
    """A group-less consumer over every partition of the two topics."""

    def __init__(self, bootstrap: str, topic_prefix: str, cache: PolicyCache) -> None:
        self.bootstrap = bootstrap
        self.topics = [
            BUDGETS.name(topic_prefix),
            POLICIES.name(topic_prefix),
            THRESHOLDS.name(topic_prefix),
        ]
        self.cache = cache
        self.applied = 0
        self.unreadable = 0
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="policy-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_caught_up(self, timeout: float) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                group_id=None,
            )
            try:
                await consumer.start()
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: retry, the cache keeps what it has
                log.warning("policy feed: %r; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        partitions: list[TopicPartition] = []
        for topic in self.topics:
            found = consumer.partitions_for_topic(topic)
            if not found:
                await consumer._client.force_metadata_update()
                found = consumer.partitions_for_topic(topic)
            if not found:
                raise LookupError(f"topic {topic} does not exist")
            partitions.extend(TopicPartition(topic, p) for p in found)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp, end in ends.items() if end > 0}
        if not pending:
            self._mark_caught_up()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for record in records:
                    self._apply(record.value)
            if pending:
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if not pending:
                    self._mark_caught_up()

    def _mark_caught_up(self) -> None:
        if not self.cache.caught_up:
            log.info("policy feed caught up (%d events applied)", self.applied)
        self.cache.caught_up = True
        self._caught_up.set()

    def _apply(self, raw: bytes | None) -> None:
        if raw is None:
            return  # a tombstone: nothing to fold
        try:
            event = decode(raw)
            if isinstance(event, PolicyChanged):
                self.cache.apply_policy(event)
            elif isinstance(event, ThresholdCrossed):
                self.cache.apply_crossing(event)
            elif isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
                self.cache.apply_budget(event)
            else:
                return
        except AllotmentError as exc:
            self.unreadable += 1
            log.warning("policy feed: skipped an unreadable record: %s", exc)
            return
        self.applied += 1
