"""The agents: resolve usage, charge budgets, reset policies. Each body is a few calls.

Both table-updating agents run with `concurrency=1` (faust-streaming #606: concurrent
instances of one agent race on table keys). Offsets are committed by Faust only for events
whose processing finished, and only after the producer flushed: the app's producer buffer
waits until the broker acknowledged every table write made before the flush
(`delivery.AcknowledgedBuffer`), and a send that failed ends the process before that commit
(`delivery.py`), so every output of a committed event (charges, dead letters, changelog
writes) is durable before its offset is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from faust.streams import _current_event
from faust.types import TP, EventT
from pydantic import ValidationError

from schemas.charges import BudgetCharged
from schemas.errors import AllotmentError
from services.common.kafka import partition_for
from streams.budgets import Budget
from streams.faust.allocations import AllocationFeed
from streams.faust.app import WorkerConfig
from streams.faust.charging import Charger, StoredLedger
from streams.faust.deadletter import Rejected, dead_letter_key, reason_of, to_dead_letter
from streams.faust.dedupe_index import open_dedupe_index, restore_from_table
from streams.faust.delivery import SendFailures, crash_on_error, delivered, exit_to_reread
from streams.faust.metrics import WorkerMetrics
from streams.faust.offset_guard import OffsetGuard
from streams.faust.policy_publishing import (
    policy_event,
    redecision_due,
    should_publish,
    timer_instant,
    timer_settled,
)
from streams.faust.resolve import Resolver, UsageRecord
from streams.faust.tables import PipelineTables, declare_tables
from streams.faust.topics import PipelineTopics, declare_topics
from streams.periods import period_of

log = logging.getLogger("allotment.worker")

UNKNOWN_BUDGET_WAIT = 5.0
"""Seconds a charge for a budget this worker has not read waits before it is dead-lettered."""


@contextlib.contextmanager
def current(event: EventT) -> Iterator[None]:
    """Make `event` the stream's current event while writing a table.

    `take_events` hands the agent a list; Faust's context variable then still points at no
    event, and a table write needs one to pick its changelog partition (the event's own).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class Pipeline:
    """The wired app: topics, tables, stage adapters and the three agents."""

    def __init__(self, app: faust.App, config: WorkerConfig, metrics: WorkerMetrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.topics: PipelineTopics = declare_topics(app, config.topic_prefix)
        self.tables: PipelineTables = declare_tables(app, self.topics, config)
        self.dedupe = open_dedupe_index(config)
        usage = self.topics.usage.get_topic_name()
        self.resolver = Resolver(
            usage,
            config.partitions,
            self.dedupe,
            self.tables.budget_view.index,
            lambda partition: self._committed_offset(usage, partition),  # expiry lags commits
            broker_times=True,
        )
        self.allocations = AllocationFeed(
            config.bootstrap, config.topic_prefix, self.tables.budget_view.index
        )
        self.charger = Charger(
            config.late_window,
            self.tables.emitted.__contains__,
            self.tables.current_policy,
            self.allocations.limits,
        )
        self._earliest: dict[Any, int] = {}
        self._redecided: dict[str, int] = {}  # budget id -> revision the timer re-decided
        self.offsets = OffsetGuard(self._committed_offset)
        self.tables.dedupe.on_recover(self._rebuild_dedupe_index)
        app.on_partitions_revoked.connect(self._close_dedupe_index)
        self.send_failures = SendFailures()
        app.sensors.add(self.send_failures)
        self._wire()

    def _trusted_ms(self, message: Any) -> int | None:
        """How far the lines of a charge record may move a ledger's "now": its broker time
        plus the clock skew allowed (None for a record without a time)."""
        if not message.timestamp:
            return None
        return int((message.timestamp + self.config.clock_skew.total_seconds()) * 1000)

    def _committed_offset(self, topic: str, partition: int) -> int | None:
        """Where the agent must start reading a partition: the group's committed offset as
        Faust holds it (next to read), or for a group that never committed, the partition's
        earliest offset (read at assignment)."""
        committed: dict[Any, int | None] = getattr(self.app.consumer, "_committed_offset", {})
        tp = TP(topic, partition)
        found = committed.get(tp)
        return found if found is not None else self._earliest.get(tp)

    async def _remember_earliest(self) -> None:
        names = {self.topics.usage.get_topic_name(), self.topics.charges.get_topic_name()}
        assigned = [tp for tp in self.app.consumer.assignment() if tp.topic in names]
        self._earliest = dict(await self.app.consumer.earliest_offsets(*assigned))

    async def _rebuild_dedupe_index(self) -> None:
        """The dedupe table's recovery callback: make the index agree with the table.

        Faust runs recovery callbacks inside `asyncio.wait` (faust-streaming 0.15.3,
        tables/recovery.py `on_recovery_completed`), which never raises what they raise: a
        failed restore (the broker call, a RocksDB open or write) would let the streams resume
        with an index never checked, or half rebuilt, and a duplicate would be charged again.
        Any failure ends the process instead; nothing after the recovery was committed.
        It runs on the loop, by choice: the group's heartbeats run in Faust's consumer thread
        (a restore that held the loop 25 s kept the worker's generation), so a long restore
        (8.5 s for 3M one-id records) delays only this loop's timers and deliveries. A thread
        was tried and reverted (1bb4810..046ebe0): it needs guards against Faust resuming a
        revoked assignment after the callback, and a stop clearing the store under it.
        """
        try:
            self.offsets.reset()
            await self._remember_earliest()
            usage = self.topics.usage.get_topic_name()
            assigned = self.app.assignor.assigned_actives()
            owned = {tp.partition for tp in assigned if tp.topic == usage}
            restore_from_table(self.dedupe, self.tables.dedupe, owned)
            log.info("dedupe index restored", extra={"partitions": sorted(owned),
                                                     "ids": self.dedupe.size()})  # fmt: skip
        except Exception as exc:
            exit_to_reread("dedupe index restore failed; exiting so recovery runs again", exc)

    async def _close_dedupe_index(self, *_args: Any, **_kwargs: Any) -> None:
        """On revoke: close every partition's index (file handles, RocksDB memory); the next
        recovery opens again what this worker then owns (`restore`)."""
        self.dedupe.close()

    def _wire(self) -> None:
        app, config = self.app, self.config

        async def resolve_usage(stream: Any) -> None:
            async for events in stream.take_events(config.batch_max, config.batch_within):
                with crash_on_error("resolve_usage"):
                    self.offsets.check(events)
                    await self.resolve_batch(events)

        async def charge_budgets(stream: Any) -> None:
            async for event in stream.events():
                if not self.allocations.ready.is_set():
                    # Never charge with a book behind the one a crashed run had (the worker
                    # catches up before Faust starts, so this waits only in a bare Pipeline).
                    await self.allocations.wait_ready()
                with crash_on_error("charge_budgets"):
                    self.offsets.check([event])
                    await self.charge(event)

        async def reset_policies() -> None:
            await self.allocations.wait_ready()
            await self.reset_policies(datetime.now(UTC))

        async def follow_allocations() -> None:
            with crash_on_error("follow_allocations"):
                await self.allocations.run()

        app.agent(self.topics.usage, name="resolve_usage", concurrency=1)(resolve_usage)
        app.agent(self.topics.charges, name="charge_budgets", concurrency=1)(charge_budgets)
        app.timer(config.reset_check_interval, name="reset_policies")(reset_policies)
        app.task(follow_allocations)
        app.timer(5.0, name="report_lag")(self.report_lag)

    async def resolve_batch(self, events: list[EventT]) -> None:
        records = [
            UsageRecord(
                e.message.partition,
                e.message.offset,
                round((e.message.timestamp or 0) * 1000),
                e.message.value,
            )
            for e in events
        ]
        out = self.resolver.resolve(records)
        sent = [await self.send_dead_letter(rejected) for rejected in out.rejected]
        for budget_id, value in out.charges:
            sent.append(await self.topics.charges.send(key=budget_id.encode(), value=value))
        by_partition = {e.message.partition: e for e in events}
        for record in out.records:
            with current(by_partition[record.partition]):
                self.tables.dedupe[record.key.encode()] = orjson.dumps(record.to_dict())
        for partition, keys in self.resolver.keep(out).items():  # the index after the table
            with current(by_partition[partition]):
                for key in keys:
                    self.tables.dedupe.pop(key.encode(), None)
        await delivered(sent)
        self.metrics.events_in.inc(out.events_in)
        self.metrics.duplicates.inc(out.duplicates)

    async def dead_letter(self, rejected: Rejected) -> None:
        """Dead-letter one record and wait until the broker has it."""
        await delivered([await self.send_dead_letter(rejected)])

    async def send_dead_letter(self, rejected: Rejected) -> Awaitable[Any]:
        """Queue a dead letter; returns its delivery, which the caller must await."""
        delivery = await self.topics.dead_letter.send(
            key=dead_letter_key(rejected), value=to_dead_letter(rejected)
        )
        self.metrics.dead_letters.inc()
        log.warning(
            "dead-lettered",
            extra={
                "topic": rejected.topic,
                "partition": rejected.partition,
                "offset": rejected.offset,
                "index": rejected.index,
                "reason": rejected.reason,
            },
        )
        return delivery

    async def charge(self, event: EventT) -> None:
        message = event.message
        try:
            charge = BudgetCharged.model_validate_json(message.value or b"")
        except ValidationError as exc:
            rejected = Rejected(
                message.topic, message.partition, message.offset, str(exc), message.value or b""
            )
            await self.dead_letter(rejected)
            return
        budget = await self.budget_for(charge.budget_id)
        if budget is None:
            # Nothing to fold it into: kept with the reason, never dropped.
            reason = f"budget_id: {charge.budget_id} is not a budget this worker knows"
            rejected = Rejected(message.topic, message.partition, message.offset, reason,
                                message.value or b"")  # fmt: skip
            await self.dead_letter(rejected)
            return
        key = charge.budget_id.encode()
        try:
            stored = StoredLedger.from_bytes(self.tables.ledger.get(key), charge.budget_id)
            outcome = self.charger.charge(stored, budget, charge, self._trusted_ms(message))
        except AllotmentError as exc:
            # A rule refuses this charge (it would refuse it again after every restart):
            # keep it with the reason instead of stopping the ledger.
            reason, errors = reason_of(exc)
            rejected = Rejected(message.topic, message.partition, message.offset, reason,
                                message.value or b"", errors)  # fmt: skip
            await self.dead_letter(rejected)
            return
        self.tables.ledger[key] = outcome.stored.to_bytes()
        self.charger.forecasts.track(budget, charge.source_partition, outcome.lines)
        for wire in outcome.thresholds:
            value = orjson.dumps(wire)
            self.tables.crossings[key] = value
            self.tables.emitted.add_wire(value)
            self.metrics.thresholds.inc()
        for policy in outcome.policies:
            self.tables.policies[key] = orjson.dumps(policy)
            self.metrics.policies.inc()
        self.metrics.charges.inc()
        self.metrics.lines_applied.inc(outcome.applied)
        if outcome.late:
            self.metrics.late_events.inc(outcome.late)
            log.warning(
                "late events counted, not charged",
                extra={"budget_id": charge.budget_id, "late": outcome.late},
            )

    async def budget_for(self, budget_id: str) -> Budget | None:
        """The charged budget, live or retired (a charge resolved before the retirement still
        counts), waiting up to `UNKNOWN_BUDGET_WAIT` seconds for one this worker has not read.

        Resolve charges only budgets it knows, so an unknown one is either a definition this
        worker's budget table has not read yet (resolve ran on another worker: wait for it) or
        a retired budget whose definition compaction removed before this worker read it.
        """
        view = self.tables.budget_view
        budget = view.find(budget_id)
        waited = 0.0
        while budget is None and waited < UNKNOWN_BUDGET_WAIT:
            await asyncio.sleep(0.1)
            waited += 0.1
            budget = view.find(budget_id)
        return budget

    def owned_charge_partitions(self) -> set[int]:
        name = self.topics.charges.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

    async def reset_policies(self, now: datetime) -> None:
        """Re-decide the budgets whose policy may be out of date (`redecision_due`): `reset_at`
        passed, allocation changed their tenant's limits, or the budget was amended since;
        decided no earlier than the policy in force (`timer_instant`), and marked done only
        once settled (`timer_settled`).

        A hard-stopped budget gets no traffic, so no charge would ever re-decide it; this timer
        does, for the budgets whose charges partition this worker owns. A retired budget is
        left alone: the proxy matches live budgets only, so its policy routes nothing.
        """
        owned = self.owned_charge_partitions()
        index = self.tables.budget_view.index()
        touched, self.allocations.touched = self.allocations.touched, set()
        for key, raw in list(self.tables.policies.items()):
            current = orjson.loads(raw)
            budget_id = key.decode()
            budget = index.get(budget_id)
            if budget is None:
                continue
            if not redecision_due(current, budget, now, touched, self._redecided.get(budget_id)):
                continue
            if partition_for(budget_id, self.config.partitions) not in owned:
                continue
            new, settled = self.redecide(budget, timer_instant(current, now))
            if settled:  # else tried again next tick
                self._redecided[budget_id] = budget.revision
            elif budget.tenant in touched:
                self.allocations.touched.add(budget.tenant)
            if new is not None:
                log.info("policy re-decided", extra={"budget_id": budget_id,
                                                     "policy": new["policy"]})  # fmt: skip

    def redecide(self, budget: Budget, now: datetime) -> tuple[dict[str, Any] | None, bool]:
        """Decide `budget`'s policy at `now` outside a charge (a timer, a forecast) and publish
        it when it changed; returns what was published and whether it settled (`timer_settled`).

        The same inputs as the charge path: the stored ledger, the effective limits at `now`
        and whether an overrun of the period was projected.
        """
        key = budget.budget_id.encode()
        stored = StoredLedger.from_bytes(self.tables.ledger.get(key), budget.budget_id)
        period_key = period_of(budget.spec.period, now).key
        overrun = self.charger.forecasts.projected_overrun(budget.budget_id, period_key)
        limits = self.allocations.limits(budget, now)
        new = policy_event(budget, stored.state, now, limits, overrun)
        current = self.tables.current_policy(budget.budget_id)
        if not should_publish(current, new):
            return None, current is None or timer_settled(current, new)
        self.tables.policies[key] = orjson.dumps(new)
        self.metrics.policies.inc()
        return new, True

    def on_projected_overrun(self, budget_id: str, at: datetime) -> None:
        """The forecast agent announced an overrun: a budget that opts in demotes now."""
        budget = self.tables.budget_view.index().get(budget_id)
        if budget is not None and not budget.retired:
            self.redecide(budget, at)

    async def report_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in (
                self.topics.usage.get_topic_name(),
                self.topics.charges.get_topic_name(),
            ):
                continue
            high = consumer.highwater(tp)
            read = self.app.monitor.tp_read_offsets.get(tp)  # type: ignore[attr-defined]
            if high is None:
                continue
            lag = max(0, high - ((read or -1) + 1))
            self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
