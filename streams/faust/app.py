"""The Faust app and its configuration: at-least-once, RocksDB tables, no exactly_once.

`build_app` is called by the worker's composition root; nothing here connects at import time.
Settings that matter for correctness, and why:
- `processing_guarantee="at_least_once"`: Faust's exactly_once mode has open bugs; every
  stateful step is made idempotent instead (see `agents.py`).
- `producer_acks=-1`: an output counts only once every in-sync replica has it; Faust flushes the
  producer before each offset commit, so a committed offset implies its outputs are durable.
- `consumer_auto_offset_reset="earliest"`: a fresh group replays the topics from offset zero.
- `table_standby_replicas=0`: workers restore what they own from changelogs; a standby would
  double the changelog reads on a two-core machine.
- `AllotmentApp`: Faust's producer flush before a commit can return while a table write is
  still on its way; this app's producer waits for the broker's acknowledgement of each one
  (`delivery.AcknowledgedBuffer`).
- `AllotmentApp.on_stop`: the app's timers and tasks (policy resets, forecasts) stop before
  its last producer flush, and the producer sends its buffer before it closes
  (`delivery.AcknowledgingProducer`): a clean stop writes everything it accepted and exits 0.
- `consumer_group_instance_id`: static membership, so a worker restarted after a crash gets its
  partitions back without waiting for the session timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import faust
from faust.types.transports import ProducerT

from schemas.errors import AllotmentError
from schemas.topics import CHARGES, USAGE
from schemas.usage import CLOCK_SKEW
from streams.faust.delivery import AcknowledgingProducer, acknowledge_table_writes

STORES = ("rocksdb", "memory")


class InvalidWorkerConfig(AllotmentError):
    """A worker setting breaks a rule; names the setting."""

    def __init__(self, setting: str, rule: str) -> None:
        self.setting = setting
        self.rule = rule
        super().__init__(f"{setting}: {rule}")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one `allotment worker` process is configured with (flags and environment)."""

    bootstrap: str
    topic_prefix: str
    store_dir: Path
    store: str = "rocksdb"
    group: str = ""
    instance_id: str = ""
    partitions: int = USAGE.partitions
    web_port: int = 6066
    dedupe_window: timedelta = timedelta(days=7)
    late_window: timedelta = timedelta(days=2)
    clock_skew: timedelta = CLOCK_SKEW
    """How far past a charge record's broker time its lines may move a ledger's "now"
    (`streams.ledger.apply_charge(newest_trusted_ms=)`): a line stamped later is still charged,
    to its own period, but the ledger's now stops at the cap. Given to the resolve stage, it
    also says the usage records' times are real broker times (`Resolver`), against which the
    contract's fixed `schemas.usage.MAX_AHEAD`, not this, refuses absurd times."""
    batch_max: int = 4000
    batch_within: float = 0.05
    session_timeout: float = 10.0
    reset_check_interval: float = 5.0
    log_level: str = "info"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def app_id(self) -> str:
        """The consumer group and the prefix of the pipeline's changelog topics."""
        return self.group or f"{self.topic_prefix}.pipeline"

    def validate(self) -> WorkerConfig:
        if self.store not in STORES:
            raise InvalidWorkerConfig("store", f"must be one of {', '.join(STORES)}")
        if self.partitions != USAGE.partitions or self.partitions != CHARGES.partitions:
            raise InvalidWorkerConfig(
                "partitions",
                f"must equal the usage and charges topics' partition count ({USAGE.partitions})",
            )
        if self.batch_max < 1:
            raise InvalidWorkerConfig("batch_max", "must be at least 1")
        if self.batch_within <= 0:
            raise InvalidWorkerConfig("batch_within", "must be positive (seconds)")
        if self.session_timeout < 6:
            raise InvalidWorkerConfig("session_timeout", "must be at least 6 s (broker minimum)")
        if self.dedupe_window <= timedelta(0):
            raise InvalidWorkerConfig("dedupe_window", "must be positive")
        if self.late_window < timedelta(0):
            raise InvalidWorkerConfig("late_window", "must not be negative")
        if self.clock_skew < timedelta(0):
            raise InvalidWorkerConfig("clock_skew", "must not be negative")
        return self


class AllotmentApp(faust.App):
    """A Faust app whose producer flush covers every table write (see `AcknowledgedBuffer`).

    The producer and its buffer are built where Faust builds the producer (`App._new_producer`,
    faust-streaming 0.15.3 app/base.py), before anything can queue a write or capture the
    buffer.
    """

    def _new_producer(self) -> ProducerT:
        if self.conf.producer_threaded:
            raise InvalidWorkerConfig("producer_threaded", "bypasses the acknowledged buffer")
        producer = AcknowledgingProducer(self.transport, loop=self.loop, beacon=self.beacon)
        return acknowledge_table_writes(self, producer)

    async def on_stop(self) -> None:
        """Stop the app's timers and tasks first, then Faust's stop (consumer, last flush).

        Faust cancels them only after it stopped every service, the producer included
        (mode's `Service.stop`: `on_stop`, children, then futures): a table write a timer made
        after the last flush met a closed producer and ended a clean stop with 70. A timer
        cancelled here is cancelled at an `await`, as Faust would have cancelled it later, and
        what it derives (policy resets, forecasts) is derived again at the next start.
        """
        await self._stop_futures()
        await super().on_stop()


def build_app(config: WorkerConfig) -> faust.App:
    """The Faust app for one worker process. Agents and tables are added by `agents.wire`."""
    config.validate()
    store_dir = config.store_dir
    os.makedirs(store_dir, exist_ok=True)
    return AllotmentApp(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        store="rocksdb://" if config.store == "rocksdb" else "memory://",
        datadir=str(store_dir),
        autodiscover=False,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_request_size=8 * 1024 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=config.instance_id or None,
        topic_partitions=config.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        table_standby_replicas=0,
        broker_session_timeout=config.session_timeout,
        broker_heartbeat_interval=min(3.0, config.session_timeout / 3),
        broker_commit_interval=1.0,
        stream_recovery_delay=0.0,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        Table="streams.faust.tables:RawTable",
        GlobalTable="streams.faust.tables:RawGlobalTable",
    )
