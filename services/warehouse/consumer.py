"""The projection consumer: reads the topics and writes rows and offsets in one transaction.

It does not use Kafka's consumer groups: the next offset of every (topic, partition) lives in
`consumer_offsets` beside the rows it produced, so after a crash it resumes exactly where its
committed rows end. It reads with `read_committed`, so a producer that ever writes in Kafka
transactions never shows it an aborted record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Connection, Engine, delete, func, select, text
from sqlalchemy.exc import DataError, IntegrityError

from schemas.errors import AllotmentError
from schemas.topics import ALL
from services.common.offsets import load_offsets, store_offsets
from services.warehouse import tables as t
from services.warehouse.projector import CONFIG_KINDS, KINDS, Projector, Record
from services.warehouse.seen import worker_dedupe_window

log = logging.getLogger(__name__)

CONSUMER = "warehouse"
Progress = Callable[[int], None]
IDLE_STEPS = 20
"""Empty fetches in a row after which `catch_up` stops: transaction markers at a partition's
end count in its end offset but are never delivered, so the position may stop short of it."""


class ConsumerNotStarted(AllotmentError):
    """The consumer was used before `start()` (a composition-root bug)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"consumer {name!r}: call start() first")


class ProjectionBusy(AllotmentError):
    """Another consumer already projects these topics into this database.

    Two writers of one projection would interleave their budget indexes and offsets; a rebuild
    under a running consumer would race it. A session advisory lock keeps them apart.
    """

    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.prefix = prefix
        super().__init__(
            f"consumer {name!r} for topics {prefix}.* is already running against this database; "
            "stop it first"
        )


def _lock_key(name: str, prefix: str) -> int:
    digest = hashlib.sha256(f"allotment-projection:{name}:{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class WarehouseConsumer:
    """Owns one aiokafka consumer and one `Projector`; build it in a composition root.

    `dedupe_window` must be the worker's (`allotment worker --dedupe-window-hours`) for the
    warehouse to count the events the ledger counts; by default it is what the worker reads
    without that flag (ALLOTMENT_DEDUPE_WINDOW_HOURS, else its default).
    """

    def __init__(
        self,
        engine: Engine,
        bootstrap: str,
        prefix: str,
        name: str = CONSUMER,
        dedupe_window: timedelta | None = None,
    ) -> None:
        self.engine = engine
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.name = name
        window = dedupe_window or worker_dedupe_window()
        self.projector = Projector(window, broker_times=True)  # Kafka's record times
        self._kind_of: dict[str, str] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._config_ends: dict[TopicPartition, int] = {}
        self._lock: Connection | None = None

    @property
    def partitions(self) -> list[TopicPartition]:
        result = []
        for spec in ALL:
            if spec.suffix in KINDS:
                self._kind_of[spec.name(self.prefix)] = spec.suffix
                result += [
                    TopicPartition(spec.name(self.prefix), p) for p in range(spec.partitions)
                ]
        return result

    async def start(self) -> None:
        """Take the projection's lock, then seek every partition to its stored offset."""
        await asyncio.to_thread(self._take_lock)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        try:
            await consumer.start()
            consumer.assign(self.partitions)
            await self._seek_to_stored()
            self._config_ends = await consumer.end_offsets(self._config_partitions())
        except BaseException:
            await self.stop()  # a failed start releases the lock and the consumer
            raise

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._lock is not None:
            await asyncio.to_thread(self._release_lock, self._lock)
            self._lock = None

    def _release_lock(self, conn: Connection) -> None:
        # A pooled connection outlives close(): unlock explicitly, the session stays open.
        try:
            conn.execute(select(func.pg_advisory_unlock(_lock_key(self.name, self.prefix))))
            conn.commit()
        finally:
            conn.close()

    def _take_lock(self) -> None:
        conn = self.engine.connect()
        key = _lock_key(self.name, self.prefix)
        if not conn.execute(select(func.pg_try_advisory_lock(key))).scalar():
            conn.close()
            raise ProjectionBusy(self.name, self.prefix)
        conn.commit()
        self._lock = conn

    async def reset(self) -> None:
        """Empty the read models, forget this consumer's offsets, start again at offset zero."""
        names = ", ".join(table.name for table in t.PROJECTED)

        def empty() -> None:
            with self.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {names}"))
                conn.execute(
                    delete(t.consumer_offsets).where(
                        t.consumer_offsets.c.consumer == self.name,
                        t.consumer_offsets.c.topic.like(f"{self.prefix}.%"),
                    )
                )

        await asyncio.to_thread(empty)
        await self._seek_to_stored()

    async def _seek_to_stored(self) -> None:
        consumer = self._require()
        stored = await asyncio.to_thread(self._load)
        for tp in self.partitions:
            # Offset 0 of a partition whose head expired is out of range; auto_offset_reset
            # "earliest" then starts at its first retained record.
            consumer.seek(tp, stored.get((tp.topic, tp.partition), 0))

    def _load(self) -> dict[tuple[str, int], int]:
        with self.engine.begin() as conn:
            self.projector.load(conn)
            return load_offsets(conn, self.name)

    def _config_partitions(self) -> list[TopicPartition]:
        return [tp for tp in self.partitions if self._kind_of[tp.topic] in CONFIG_KINDS]

    async def _config_lags(self) -> bool:
        """Whether a config partition's position is short of its last known end."""
        consumer = self._require()
        for tp in self._config_partitions():
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = consumer.highwater(tp)
            if end is None:
                end = self._config_ends.get(tp, 0)
            if await consumer.position(tp) < end:
                return True
        return False

    async def _gate(self) -> None:
        """Hold usage and signals back while config lags its last known end.

        Usage is matched against the budget revisions in force at its record time, so the
        config records before it must be projected first: a rebuild reads all config, then
        usage; a live run holds usage while a config change it has heard of is unread.
        """
        consumer = self._require()
        others = [tp for tp in self.partitions if self._kind_of[tp.topic] not in CONFIG_KINDS]
        if await self._config_lags():
            consumer.pause(*others)
        else:
            consumer.resume(*others)

    async def step(self, timeout_ms: int = 500, max_records: int = 5000) -> int:
        """Fetch one batch and project it; returns how many records it wrote."""
        consumer = self._require()
        await self._gate()
        batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        config = set(self._config_partitions())
        if any(tp not in config for tp in batch) and await self._config_lags():
            # The fetch brought config that this batch did not take (`max_records`): it may be
            # older than the batch's usage. Project the config only; the rest is read again.
            for tp, messages in batch.items():
                if tp not in config and messages:
                    consumer.seek(tp, messages[0].offset)
            batch = {tp: messages for tp, messages in batch.items() if tp in config}
        records = [
            Record(
                self._kind_of[tp.topic],
                tp.topic,
                tp.partition,
                m.offset,
                m.value or b"",
                m.timestamp,
            )
            for tp, messages in batch.items()
            for m in messages
        ]
        if not records:
            return 0
        offsets = {
            (tp.topic, tp.partition): messages[-1].offset + 1
            for tp, messages in batch.items()
            if messages
        }
        try:
            await asyncio.to_thread(self._write, records, offsets)
        except Exception:
            await self._seek_to_stored()
            raise
        return len(records)

    def _write(self, records: list[Record], offsets: dict[tuple[str, int], int]) -> None:
        try:
            with self.engine.begin() as conn:
                self.projector.project(conn, records)
                store_offsets(conn, self.name, offsets)
        except (DataError, IntegrityError):
            log.warning("batch of %d refused; projecting it record by record", len(records))
            self._write_one_by_one(records, offsets)

    def _write_one_by_one(self, records: list[Record], offsets: dict[tuple[str, int], int]) -> None:
        """Bad input never stops the projection: a record whose data the database refuses is
        skipped (logged with its origin; it stays on its topic) and the others are written.
        Any other database error (a missing migration, a lost connection) is raised, and the
        batch is retried from the stored offsets: nothing is skipped for the server's fault."""
        with self.engine.begin() as conn:
            self.projector.load(conn)
            for record in sorted(records, key=lambda r: KINDS.index(r.kind)):
                try:
                    with conn.begin_nested():
                        self.projector.project(conn, [record])
                except (DataError, IntegrityError) as exc:
                    self.projector.counts["unprojectable"] += 1
                    log.error(
                        "skipped %s/%d@%d: the read model refuses it (%s)",
                        record.kind,
                        record.partition,
                        record.offset,
                        type(exc.orig or exc).__name__,
                    )
            store_offsets(conn, self.name, offsets)

    async def backlog(self) -> int:
        """Records between the current positions and the ends of the partitions."""
        consumer = self._require()
        ends = await consumer.end_offsets(self.partitions)
        behind = 0
        for tp, end in ends.items():
            behind += max(0, end - await consumer.position(tp))
        return behind

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Project until every partition reaches the end it had when this call began."""
        consumer = self._require()
        ends = await consumer.end_offsets(self.partitions)
        done = idle = 0
        while idle < IDLE_STEPS:
            behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
            if not behind:
                break
            written = await self.step(timeout_ms=300)
            idle = 0 if written else idle + 1
            done += written
            if progress is not None and written:
                progress(written)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        """Project until `stop` is set; a failed batch is retried from the stored offsets."""
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("projection batch failed; retrying from the stored offsets")
                await asyncio.sleep(1)

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ConsumerNotStarted(self.name)
        return self._consumer
