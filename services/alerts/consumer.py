"""Fills the outbox from the budgets, thresholds, policies, forecasts and alert-deliveries topics.

Offsets live in PostgreSQL (`consumer_offsets`, consumer "alerts") and are written in the
same transaction as the outbox rows and budget facts they produced. After a crash the service
resumes at exactly the offsets of its last commit; a replay from offset zero finds every dedupe
key taken and enqueues nothing.

Every partition is assigned by hand (no consumer group): alert topics carry few messages, and a
second instance only repeats inserts that the dedupe key turns into no-ops. Budget facts and
delivery outcomes are caught up to the end of `budgets` and `alert-deliveries` before any signal
is read: budget paths are complete, and a row rebuilt from a signal whose alert the topic records
as delivered or abandoned is inserted final (`services.alerts.recorded`), so it is never sent
again. Outcomes read afterwards (another worker's) settle their rows as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from schemas.alerts import AlertAbandoned, AlertDelivered, AlertOutcome
from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import decode
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated, PolicyChanged, ProjectedOverrun, ThresholdCrossed
from schemas.topics import ALERT_DELIVERIES, BUDGETS, FORECASTS, POLICIES, THRESHOLDS, TopicSpec
from services.alerts import facts, outbox, recorded
from services.alerts.config import AlertsConfig
from services.alerts.payload import BudgetView, budget_path, build_payload, delivery_id, update_view
from services.alerts.routing import AlertSignal, Route, route, signal_of
from services.common.offsets import load_offsets, store_offsets

log = logging.getLogger(__name__)
SIGNAL_SPECS: tuple[TopicSpec, ...] = (FORECASTS, THRESHOLDS, POLICIES)
"""In this order inside a batch: a forecast enriches the crossings read with it, and a
crossing is enqueued before a reset read with it."""
SIGNAL_TYPES = (ThresholdCrossed, PolicyChanged, ProjectedOverrun, ForecastUpdated)


@dataclass
class BatchResult:
    """What one committed batch did, for telemetry after the commit."""

    events: list[tuple[Event, BudgetView]] = field(default_factory=list)
    enqueued: int = 0
    skipped: int = 0
    settled: int = 0
    """Outbox rows that outcomes read from `alert-deliveries` made final."""


@dataclass(frozen=True)
class SignalCause:
    """The record an alert comes from, stored on its outbox row so that the alert's outcome
    event (`schemas.alerts`) can name it."""

    type: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def apply_signal(
    conn: Connection,
    config: AlertsConfig,
    source: str,
    event: Event,
    read_at: datetime,
    cause: SignalCause | None = None,
) -> tuple[BudgetView, int]:
    """Fold one signal into the budget's state and enqueue its deliveries; returns the view
    and how many rows were added (0 on a replay)."""
    if not isinstance(event, SIGNAL_TYPES):
        return BudgetView(), 0
    before = facts.load_view(conn, source, event.budget_id)
    view = update_view(before, event)
    facts.save_view(conn, source, event.tenant, event.budget_id, view)
    signal = signal_of(event, before.prior)
    if signal is None:
        return view, 0
    path = budget_path(signal.budget_id, facts.ancestry(conn, source, signal.budget_id))
    last: dict[str, datetime] = {}
    if any(rule.min_interval_seconds for rule in config.rules):
        names = [c.name for c in config.channels]
        last = outbox.last_sent(conn, source, signal.budget_id, names)
    routes = route(signal, path, config, last, read_at)
    if signal.pages and view.reset_since(signal.at):
        routes = [_too_late(r) if r.channel_type == "pagerduty" else r for r in routes]
    payload = build_payload(event, signal, path, view, config.api_base)
    cause = cause or SignalCause(event.TYPE)
    added = 0
    for r in routes:
        if r.channel_type == "pagerduty" and signal.kind == "period_reset":
            added += _enqueue_resolves(conn, source, signal, r, payload, cause)
            continue
        action = "trigger" if r.channel_type == "pagerduty" else "notify"
        added += _enqueue(conn, source, signal, r, payload, action, cause)
    return view, added


def _too_late(r: Route) -> Route:
    """A page read after its budget's period already reset would never be resolved."""
    return Route(r.channel, r.channel_type, r.not_before, True, "period already reset")


def _enqueue(
    conn: Connection,
    source: str,
    signal: AlertSignal,
    r: Route,
    payload: dict[str, object],
    action: str,
    cause: SignalCause,
    discriminator: str | None = None,
) -> int:
    period_end = payload.get("period_end")
    row = outbox.NewRow(
        delivery_id=delivery_id(signal, r.channel),
        tenant=signal.tenant,
        budget_id=signal.budget_id,
        period_key=signal.period_key,
        kind=signal.kind,
        discriminator=discriminator or signal.discriminator,
        channel=r.channel,
        channel_type=r.channel_type,
        action=action,
        state="suppressed" if r.suppressed else "pending",
        payload=payload,
        event_at=signal.at,
        period_end=datetime.fromisoformat(period_end) if isinstance(period_end, str) else None,
        next_attempt_at=r.not_before,
        source=source,
        last_error=r.reason or None,
        source_type=cause.type,
        source_topic=cause.topic,
        source_partition=cause.partition,
        source_offset=cause.offset,
    )
    return 1 if outbox.enqueue(conn, row) else 0


def _enqueue_resolves(
    conn: Connection,
    source: str,
    signal: AlertSignal,
    r: Route,
    payload: dict[str, object],
    cause: SignalCause,
) -> int:
    """One `resolve` per earlier period whose page is still open, on that period's dedup_key."""
    added = 0
    pages = outbox.open_pages(
        conn, source, signal.budget_id, r.channel, signal.period_key, signal.at
    )
    for period_key, _ in pages:
        paged = AlertSignal(**{**signal.__dict__, "period_key": period_key})
        added += _enqueue(conn, source, paged, r, payload, "resolve", cause, "resolve")
    return added


def apply_batch(
    engine: Engine,
    config: AlertsConfig,
    source: str,
    records: list[ConsumerRecord[bytes, bytes]],
) -> BatchResult:
    """One transaction: budget facts, delivery outcomes, outbox rows and the next offsets, all
    or nothing.

    The batch's outcomes are folded first, so a signal in the same batch finds its alert's
    outcome; a row inserted before its outcome is read is settled when it is."""
    result = BatchResult()
    read_at = datetime.now(UTC)
    offsets: dict[tuple[str, int], int] = {}
    decoded: list[tuple[ConsumerRecord[bytes, bytes], Event | None]] = []
    for record in records:
        offsets[(record.topic, record.partition)] = record.offset + 1
        decoded.append((record, _decode(record)))
    outcomes: list[AlertOutcome] = [
        e for _, e in decoded if isinstance(e, AlertDelivered | AlertAbandoned)
    ]
    with engine.begin() as conn:
        changed = recorded.record(conn, source, outcomes)
        result.settled = outbox.adopt_outcomes(conn, source, changed)
        for record, event in decoded:
            if event is None:
                result.skipped += 1
            elif isinstance(event, AlertDelivered | AlertAbandoned):
                pass  # folded above
            elif isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
                facts.apply_budget_event(conn, source, event)
            elif isinstance(event, SIGNAL_TYPES):
                cause = SignalCause(event.TYPE, record.topic, record.partition, record.offset)
                view, added = apply_signal(conn, config, source, event, read_at, cause)
                result.events.append((event, view))
                result.enqueued += added
            else:
                result.skipped += 1
        store_offsets(conn, outbox.CONSUMER, offsets)
    return result


def _decode(record: ConsumerRecord[bytes, bytes]) -> Event | None:
    if record.value is None:
        return None  # a tombstone on a compacted topic
    try:
        return decode(record.value)
    except AllotmentError as exc:
        log.warning("skipping %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
        return None


async def consume(
    engine: Engine,
    bootstrap: str,
    prefix: str,
    config: AlertsConfig,
    stop: asyncio.Event,
    on_batch: Callable[[BatchResult], None] = lambda _: None,
    caught_up: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set: read, apply in one transaction per batch, report.

    `caught_up` is set once budgets and delivery outcomes are read up to their end offsets
    at start (and signals are read from then on); the delivery loop waits for it, so it never
    claims a row whose outcome is already on the topic but not yet folded.
    """
    first = [  # read to their end before any signal
        TopicPartition(spec.name(prefix), p)
        for spec in (BUDGETS, ALERT_DELIVERIES)
        for p in range(spec.partitions)
    ]
    signals = [
        TopicPartition(spec.name(prefix), p)
        for spec in SIGNAL_SPECS
        for p in range(spec.partitions)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    rank = {
        spec.name(prefix): i for i, spec in enumerate((BUDGETS, ALERT_DELIVERIES, *SIGNAL_SPECS))
    }

    def order(tp: TopicPartition) -> tuple[int, int]:
        return rank.get(tp.topic, len(rank)), tp.partition

    try:
        await consumer.start()
        consumer.assign(first + signals)
        topics = {tp.topic for tp in first + signals}
        stored = await asyncio.to_thread(_load_offsets, engine, topics)
        fresh = []
        for tp in first + signals:
            if (tp.topic, tp.partition) in stored:
                consumer.seek(tp, stored[(tp.topic, tp.partition)])
            else:
                fresh.append(tp)
        if fresh:  # one call: each call waits for its own offset lookup
            await consumer.seek_to_beginning(*fresh)
        first_end = await consumer.end_offsets(first)
        consumer.pause(*signals)
        paused = True
        while not stop.is_set():
            if paused and await _caught_up(consumer, first_end):
                consumer.resume(*signals)
                paused = False
                if caught_up is not None:
                    caught_up.set()
            batch = await consumer.getmany(timeout_ms=300, max_records=500)
            records = [r for tp in sorted(batch, key=order) for r in batch[tp]]
            if not records:
                continue
            result = await _apply_until_stored(engine, config, prefix, records, stop)
            if result is not None:
                if result.settled:
                    log.info("alerts: %d rows settled from alert-deliveries", result.settled)
                on_batch(result)
    finally:
        await consumer.stop()


async def _apply_until_stored(
    engine: Engine,
    config: AlertsConfig,
    prefix: str,
    records: list[ConsumerRecord[bytes, bytes]],
    stop: asyncio.Event,
) -> BatchResult | None:
    """Apply a batch, retrying while PostgreSQL is unavailable; None if stopped first.

    Nothing was committed by a failed try, so retrying the same records is exact.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            return await asyncio.to_thread(apply_batch, engine, config, prefix, records)
        except DBAPIError as exc:
            log.warning("alerts: storing a batch failed, retrying in %.1fs: %s", delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 30.0)
    return None


async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def _load_offsets(engine: Engine, topics: set[str]) -> dict[tuple[str, int], int]:
    with engine.connect() as conn:
        return load_offsets(conn, outbox.CONSUMER, topics)
