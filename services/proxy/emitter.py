"""Usage events off the request path: memory → durable spool → Kafka, in batches.

A finished request leaves a `UsageRecord` in memory (no validation, no I/O on the hot path).
Every `flush_interval_s` (or `flush_max_events`) the emitter builds the `UsageRecorded` events,
appends them to the spool in one transaction, and wakes the sender. The sender packs spooled
events into `UsageBatch` envelopes per usage partition (capped by count and bytes), sends them
with acks=all, and deletes them from the spool only once Kafka has them. When the broker is
unreachable the sender backs off and retries; the spool holds everything meanwhile. Redelivery
after a crash between send and delete is harmless: the pipeline dedupes by event_id.

An event too large for any envelope (the contract bounds a proxy event far below that, so only a
changed limit gets here) would block every event behind it if resent forever. It is set aside in
the spool file's own table instead, logged and counted, and the rest drains. So is a row that is
not a usage event at all (a corrupt or hand-edited spool file): spooled bytes go into envelopes
as they are, so each row is parsed once before it is sent, and one bad row cannot turn its whole
envelope (up to 500 events of any tenant) into a record the pipeline dead-letters. An event
within our envelope cap that the usage topic still refuses (a topic never aligned) is no reason
to give it up: it stays spooled, the rest is sent and deleted, and the error says to run
`allotment create-topics`. It is retried on its own timer (up to every 5 s), out of the rounds:
a retry costs producer restarts and an error line, and must not throttle the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson

from schemas.codec import encode
from schemas.usage import UsageRecorded, scoped_event_id
from services.common.usage_producer import EventTooLarge, TopicLimitTooLow, UsageProducer
from services.proxy.spool import Spool
from services.proxy.usage import Tokens

log = logging.getLogger(__name__)
SOURCE = "proxy"
Row = tuple[int, str, bytes]  # a spool row: (id, event_id, encoded event)


@dataclass(slots=True)
class UsageRecord:
    """One finished request, as cheap to build as possible; validated later, off the path."""

    request_id: str
    occurred_at: datetime
    tenant: str
    team: str | None
    feature: str | None
    user: str | None
    virtual_key: str
    tags: tuple[str, ...]
    provider: str
    endpoint: str
    request_model: str | None
    response_model: str | None
    tokens: Tokens
    usage_status: str
    decision: str
    routed_from_model: str | None = None
    routed_to_model: str | None = None


def to_event(record: UsageRecord, received_at: datetime) -> UsageRecorded:
    """Validate a finished request into the contract's event, off the request path.

    The event id is tenant-scoped like every edge's (`scoped_event_id`), so two tenants can
    never be deduped against each other.
    """
    tokens = record.tokens
    return UsageRecorded(
        event_id=scoped_event_id(SOURCE, record.tenant, record.request_id),
        source=SOURCE,
        source_request_id=record.request_id,
        occurred_at=record.occurred_at,
        received_at=received_at,
        tenant=record.tenant,
        team=record.team,
        feature=record.feature,
        user=record.user,
        virtual_key=record.virtual_key,
        tags=list(record.tags),
        properties={"endpoint": record.endpoint},
        provider=record.provider,
        request_model=record.request_model,
        response_model=record.response_model[:200] if record.response_model else None,
        input_uncached=tokens.input_uncached,
        cache_read=tokens.cache_read,
        cache_write=tokens.cache_write,
        output=tokens.output,
        reasoning=tokens.reasoning,
        usage_status=record.usage_status,  # type: ignore[arg-type]
        decision=record.decision,  # type: ignore[arg-type]
        routed_from_model=record.routed_from_model,
        routed_to_model=record.routed_to_model,
    )


class UsageEmitter:
    """Owns the pending list, the spool writer task and the Kafka sender task."""

    def __init__(
        self,
        spool: Spool,
        sink: UsageSink,
        clock: Callable[[], datetime],
        flush_interval_s: float = 0.05,
        flush_max_events: int = 500,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self._clock = clock
        self._interval = flush_interval_s
        self._max = flush_max_events
        self._pending: list[UsageRecord] = []
        self._has_pending = asyncio.Event()
        self._spooled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.sent = 0
        self.rejected = 0
        self.set_aside = 0
        self._checked_up_to = 0  # spool row ids up to this one parsed as usage events already
        self._held: set[int] = set()  # spool row ids the topic refused: retried on their own
        self._held_retry_at, self._held_backoff = 0.0, 0.2  # loop time of their next retry

    def record(self, record: UsageRecord) -> None:
        """Hot path: remember the request; the writer task does the rest."""
        self._pending.append(record)
        if len(self._pending) >= self._max or not self._has_pending.is_set():
            self._has_pending.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="usage-spool-writer"),
            asyncio.create_task(self._send_loop(), name="usage-sender"),
        ]

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Spool everything pending, try to send it for a while, then stop. Unsent stays spooled."""
        writer, sender = self._tasks or (None, None)
        if writer is not None:
            writer.cancel()  # a batch it was converting goes back to pending (see _flush_pending)
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await self._flush_pending()
        if sender is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain(), drain_timeout_s)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        self._tasks = []
        await self.sink.close()

    async def _drain(self) -> None:
        while await asyncio.to_thread(self.spool.peek, 1):
            self._spooled.set()
            await asyncio.sleep(0.05)

    async def _write_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            await asyncio.sleep(self._interval)
            try:
                await self._flush_pending()
            except Exception:  # the disk refused (full, read-only): keep the records, retry
                log.exception("usage spool write failed; %d records kept", len(self._pending))
                await asyncio.sleep(1.0)

    async def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._has_pending.clear()
        if not batch:
            return
        try:
            await self._spool_batch(batch)
        except BaseException:
            self._pending[:0] = batch  # nothing leaves memory before it is on disk
            self._has_pending.set()
            raise

    async def _spool_batch(self, batch: list[UsageRecord]) -> None:
        now = self._clock()
        rows: list[tuple[str, bytes]] = []
        for i, record in enumerate(batch):
            if i and not i % 100:
                await asyncio.sleep(0)  # let requests run between slices of a large batch
            try:
                event = to_event(record, now)
            except Exception:  # a record the contract refuses must not stop the others
                self.rejected += 1
                log.exception("usage record %s refused by the contract", record.request_id)
                continue
            rows.append((event.event_id, encode(event)))
        await asyncio.to_thread(self.spool.append, rows)
        self._spooled.set()

    async def _send_loop(self) -> None:
        while True:
            try:
                await self._send_spooled()
            except Exception:  # the spool itself failed: log, wait, go on
                log.exception("usage sender: spool error")
                await asyncio.sleep(1.0)

    async def _send_spooled(self) -> None:
        backoff = 0.2
        while True:
            rows = await asyncio.to_thread(self._peek_checked, 5000 + len(self._held))
            if self._held_wait():  # the held rows (in front) wait for their own retry
                rows = [row for row in rows if row[0] not in self._held]
            if not rows:
                self._spooled.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._spooled.wait(), min(1.0, self._held_wait() or 1))
                continue
            try:
                await self.sink.send(rows)
            except EventTooLarge as exc:  # every other row was acknowledged
                await self._set_aside(rows, exc)
                if not rows:
                    continue
            except TopicLimitTooLow as exc:  # the rest was acknowledged; these wait for an operator
                await self._keep_refused(rows, exc)
                continue
            except Exception as exc:  # broker down or unreachable: keep spooled, retry later
                log.warning("usage send failed (%s); %d events stay spooled", exc, len(rows))
                await self.sink.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._held.difference_update(row_id for row_id, _, _ in rows)
            await asyncio.to_thread(self.spool.ack, rows[-1][0], sorted(self._held))
            self.sent += len(rows)

    def _held_wait(self) -> float:
        """Seconds until the held rows go out again: 0 if due, or if none is held."""
        if not self._held:
            self._held_backoff = 0.2
            return 0.0
        return max(0.0, self._held_retry_at - asyncio.get_running_loop().time())

    def _peek_checked(self, limit: int) -> list[Row]:
        """The oldest spooled rows that are usage events; the others are set aside on the way.

        Runs in a worker thread. A row is a usage event if it parses as a JSON object whose
        event_id is the row's (the partition is chosen by the row's). Each row is parsed once:
        rows stay spooled across an outage, and a retry does not pay for them again.
        """
        while True:
            rows = self.spool.peek(limit)
            good = []
            for row in rows:
                reason = _not_an_event(row) if row[0] > self._checked_up_to else None
                if reason is None:
                    good.append(row)
                    continue
                self.spool.set_aside([row[0]], reason)
                self.set_aside += 1
                log.error("usage: spool row %d (event %s) set aside: %s", row[0], row[1], reason)
            if rows:
                self._checked_up_to = max(self._checked_up_to, rows[-1][0])
            if good or not rows:
                return good

    async def _keep_refused(self, rows: list[Row], exc: TopicLimitTooLow) -> None:
        """Delete the acknowledged rows; the ones the topic refused stay spooled, held out of
        the rounds until their retry is due (backing off to 5 s), so they throttle nothing."""
        unsent = set(exc.event_ids)
        keep = [row_id for row_id, event_id, _ in rows if event_id in unsent]
        self._held.difference_update(row_id for row_id, _, _ in rows)
        self._held.update(keep)
        await asyncio.to_thread(self.spool.ack, rows[-1][0], sorted(self._held))
        self.sent += len(rows) - len(keep)
        self._held_retry_at = asyncio.get_running_loop().time() + self._held_backoff
        self._held_backoff = min(self._held_backoff * 2, 5.0)
        log.warning("usage: %d events stay spooled until the usage topic is aligned", len(keep))

    async def _set_aside(self, rows: list[Row], exc: EventTooLarge) -> None:
        refused = set(exc.event_ids)
        ids = [row_id for row_id, event_id, _ in rows if event_id in refused]
        await asyncio.to_thread(self.spool.set_aside, ids, str(exc))
        self._held.difference_update(ids)
        self.set_aside += len(ids)
        rows[:] = [row for row in rows if row[1] not in refused]
        log.error("usage: %d events set aside in the spool file: %s", len(ids), exc)


def _not_an_event(row: Row) -> str | None:
    """Why a spool row cannot travel as a usage event, or None if it can."""
    _, event_id, data = row
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if not isinstance(event, dict):
        return f"not a JSON object but {type(event).__name__}"
    if event.get("event_id") != event_id:
        return f"event_id {event.get('event_id')!r} is not the row's {event_id!r}"
    return None


class UsageSink:
    """The spool's way to Kafka: the project's envelope producer (acks=all), rebuilt after a
    failure so that a broker that comes back is found again."""

    def __init__(self, bootstrap: str, topic_prefix: str) -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self._producer: UsageProducer | None = None

    async def send(self, rows: list[Row]) -> None:
        if self._producer is None:
            await _probe(self.bootstrap)
            producer = UsageProducer(self.bootstrap, self.topic_prefix)
            await producer.start()  # stops its own client when it fails
            self._producer = producer
        await self._producer.send_encoded([(event_id, event) for _, event_id, event in rows])

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


async def _probe(bootstrap: str, timeout_s: float = 2.0) -> None:
    """Fail fast, without building a producer, when no bootstrap broker accepts connections.

    A producer's start waits far longer than this before it gives up; during an outage the
    sender retries with backoff, and each try should cost seconds at most.
    """
    errors = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
        except (TimeoutError, OSError, ValueError) as exc:
            errors.append(f"{server}: {exc!r}")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise ConnectionError("no Kafka broker reachable: " + "; ".join(errors))
