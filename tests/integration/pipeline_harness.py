"""What the pipeline tests share: worker processes, producing usage and budgets, reading topics.

Workers are real `allotment worker` processes (`python -m services.cli worker`), each with its
own store directory and log file; the tests read results back from Kafka (the ledger changelog,
the thresholds and policies topics), never from inside a worker.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.allocation import AllocationEvent
from schemas.budgets import BudgetDefined, BudgetSpec
from schemas.codec import encode
from schemas.topics import BUDGET_EVENTS, BUDGETS, DEAD_LETTER, POLICIES, THRESHOLDS

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One `allotment worker` subprocess; `kill()` is kill -9, `stop()` a clean SIGTERM."""

    prefix: str
    store_dir: Path
    log_path: Path
    bootstrap: str
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        cmd = [
            sys.executable, "-m", "services.cli", "worker",
            "--broker", self.bootstrap,
            "--topic-prefix", self.prefix,
            "--store-dir", str(self.store_dir),
            "--web-port", "0",
            "--session-timeout", "6",
            "--reset-check-interval", "1",
            *self.args,
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    restarts: int = 0

    def revive(self) -> bool:
        """Restart a worker that exited on purpose (status 70: it found a record it must read
        again), as a supervisor would; True when it did."""
        if self.proc is not None and self.proc.poll() == 70:
            self.restarts += 1
            self.start()
            return True
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def budget_event(
    tenant: str, budget_id: str, spec: dict[str, Any], at: datetime | None = None
) -> BudgetDefined:
    return BudgetDefined(
        budget_id=budget_id,
        tenant=tenant,
        revision=1,
        occurred_at=at or datetime.now(UTC),
        actor="test",
        spec=BudgetSpec.model_validate(spec),
    )


async def publish_budgets(bootstrap: str, prefix: str, events: Iterable[BudgetDefined]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                BUDGETS.name(prefix), encode(event), key=event.budget_id.encode()
            )
    finally:
        await producer.stop()


async def publish_allocation(bootstrap: str, prefix: str, event: AllocationEvent) -> None:
    """One allocation move (an overflow draw, a reservation, ...) on `budget-events`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            BUDGET_EVENTS.name(prefix), encode(event), key=event.tenant.encode()
        )
    finally:
        await producer.stop()


async def send_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Single-event (or garbage) messages, keyed as a third-party producer would key them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if not described or described[0].get("error_code", 0) != 0:
        return []
    return sorted(p["partition"] for p in described[0]["partitions"])


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` from offset zero up to its end at the time of the call."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = await partitions_of(bootstrap, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, recs in batch.items():
                records.extend(recs)
                if recs and recs[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()


def latest_by_key(records: Iterable[Any]) -> dict[bytes, Any]:
    latest: dict[bytes, Any] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[record.key] = record.value
    return latest


async def ledgers(bootstrap: str, app_id: str) -> dict[str, dict[str, Any]]:
    """budget_id -> stored ledger value, from the ledger table's changelog."""
    found = latest_by_key(await read_all(bootstrap, f"{app_id}-ledger-changelog"))
    return {k.decode(): orjson.loads(v) for k, v in found.items() if v is not None}


async def thresholds(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(bootstrap, THRESHOLDS.name(prefix))]


async def policies(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(bootstrap, POLICIES.name(prefix))]


async def dead_letters(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await read_all(bootstrap, DEAD_LETTER.name(prefix))]


def period_totals(ledger: dict[str, Any], period_key: str) -> dict[str, int]:
    return dict(ledger["state"]["periods"].get(period_key, {"input": 0, "output": 0, "total": 0}))


async def wait_for(
    check: Callable[[], Any],
    timeout: float,
    workers: Iterable[WorkerProcess] = (),
    every: float = 1.0,
) -> Any:
    """Poll an async `check` until it returns a truthy value; fail with the workers' logs."""
    deadline = time.monotonic() + timeout
    last: Any = None
    workers = list(workers)
    while time.monotonic() < deadline:
        for worker in workers:
            worker.revive()
        last = await check()
        if last:
            return last
        last = last if last is not None else "None"
        await asyncio.sleep(every)
    logs = "\n---\n".join(w.log_tail() for w in workers)
    raise AssertionError(f"condition not met within {timeout}s; last={last!r}\n{logs}")


async def delete_prefixed_topics(bootstrap: str, prefix: str) -> None:
    """Remove the Faust changelog topics the workers created under the test's prefix."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(f"{prefix}.")]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def usage(
    event_id: str,
    tenant: str,
    at: datetime,
    input_tokens: int,
    output_tokens: int,
    **dims: Any,
) -> dict[str, Any]:
    """A usage event in wire form (the worker validates it like any producer's)."""
    return {
        "type": "UsageRecorded",
        "version": 1,
        "event_id": event_id,
        "source": "test",
        "occurred_at": at.isoformat(),
        "received_at": at.isoformat(),
        "tenant": tenant,
        "input_uncached": input_tokens,
        "output": output_tokens,
        **dims,
    }


def metrics_port(worker: WorkerProcess) -> int | None:
    """The /metrics port the worker logged at start (its latest start)."""
    port = None
    if worker.log_path.exists():
        for line in worker.log_path.read_text(errors="replace").splitlines():
            if '"worker starting"' in line:
                port = orjson.loads(line).get("metrics_port")
    return port


def scrape(worker: WorkerProcess) -> dict[str, float]:
    """The worker's counters (name -> value), summed over labels."""
    import urllib.request

    port = metrics_port(worker)
    if port is None:
        return {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        found[name] = found.get(name, 0.0) + float(value)
    return found


class Workers:
    """Starts workers for one test and stops them (and their topics) at teardown."""

    def __init__(self, bootstrap: str, prefix: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, name: str = "w1", *args: str) -> WorkerProcess:
        worker = WorkerProcess(
            self.prefix,
            self.tmp_path / f"store-{name}",
            self.tmp_path / f"{name}.log",
            self.bootstrap,
            [*args],
        ).start()
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.stop()


async def send_usage(
    bootstrap: str, prefix: str, events: list[dict[str, Any]], size: int = 500
) -> int:
    from services.common.usage_producer import UsageProducer

    async with UsageProducer(bootstrap, prefix, envelope_size=size) as producer:
        return await producer.send_wire(events)


def expected_crossings(
    totals: dict[str, int], limits: dict[str, int], thresholds: Iterable[int] = (75, 90, 100)
) -> set[tuple[str, int]]:
    """(budget_id, threshold) pairs that a final total per budget must have crossed."""
    return {
        (budget_id, t)
        for budget_id, total in totals.items()
        for t in thresholds
        if total * 100 >= t * limits[budget_id]
    }
