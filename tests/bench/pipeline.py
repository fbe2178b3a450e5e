"""Benchmark of the stream pipeline against the real broker (`python tests/bench/pipeline.py`).

Three figures, in one run, with the stack up:
- `raw_consume_eps`: the ceiling on this machine. A plain aiokafka consumer reads N usage events
  sent as single-event messages and decodes each with orjson.
- `pipeline_eps`: one `allotment worker` working off a backlog of N usage events (sent in
  envelopes by the shared producer), from usage in to charge lines applied to the ledgers, with
  one to three budgets charged per event.
- `loop_latency_p50_ms` / `_p99_ms`: from the broker acknowledging the event that takes a budget
  over 100 percent to its `PolicyChanged` being readable on the policies topic.
The last line is one JSON object with those figures, `ratio`, `events` and `cores`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from pipeline_harness import (  # noqa: E402
    WorkerProcess,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    metrics_port,
    publish_budgets,
    usage,
)

from schemas.topics import POLICIES, USAGE  # noqa: E402
from services.common.kafka import ensure_topics  # noqa: E402
from services.common.usage_producer import UsageProducer  # noqa: E402

TENANT = "bench-co"
TEAMS = ("a", "b")
MODELS = ("big", "mid", "small")


CHUNK = 20_000


def make_events(first: int, last: int, start: datetime) -> list[dict[str, object]]:
    return [
        usage(
            f"bench-{i}", TENANT, start + timedelta(milliseconds=i), 100 + i % 50, 20 + i % 9,
            team=TEAMS[i % 2], request_model=MODELS[i % 3],
        )
        for i in range(first, last)
    ]  # fmt: skip


def chunks(n: int, start: datetime) -> Iterator[list[dict[str, object]]]:
    """The benchmark's events, a chunk at a time (a list of all of them would be large)."""
    for first in range(0, n, CHUNK):
        yield make_events(first, min(n, first + CHUNK), start)


def charge_lines(n: int) -> int:
    """Charge lines the events make: every event charges `all`; team a and model big add one."""
    return sum(1 + (i % 2 == 0) + (i % 3 == 0) for i in range(n))


async def raw_ceiling(bootstrap: str, n: int, start: datetime) -> float:
    prefix = f"braw{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, prefix, [USAGE])
    topic = USAGE.name(prefix)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                                    max_batch_size=1 << 20)  # fmt: skip
        await producer.start()
        try:
            for events in chunks(n, start):
                futures = [
                    await producer.send(topic, orjson.dumps(e), key=str(e["event_id"]).encode())
                    for e in events
                ]
                await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False,
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20, max_poll_records=10_000,
        )  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(USAGE.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            started = time.perf_counter()
            while seen < n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batch.values():
                    for record in records:
                        orjson.loads(record.value)
                    seen += len(records)
            elapsed = time.perf_counter() - started
        finally:
            await consumer.stop()
        return n / elapsed
    finally:
        await delete_prefixed_topics(bootstrap, prefix)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name.split("{", 1)[0]] = found.get(name.split("{", 1)[0], 0.0) + float(value)
    return found


async def wait_port(worker: WorkerProcess, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port = metrics_port(worker)
        if port and "Worker ready" in worker.log_path.read_text(errors="replace"):
            return port
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        await asyncio.sleep(0.2)
    raise RuntimeError(f"worker not ready:\n{worker.log_tail()}")


def ready_times(worker: WorkerProcess) -> list[float]:
    """Wall-clock times of the worker's "Worker ready" log lines (streams resume there)."""
    stamps = [
        orjson.loads(line)["ts"]
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if "Worker ready" in line
    ]
    if not stamps:
        raise RuntimeError("worker never got ready")
    return [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]


async def all_charged(bootstrap: str, prefix: str, n: int) -> bool:
    """Whether the `all` budget's ledger (from its changelog) counts every event."""
    found = await ledgers(bootstrap, f"{prefix}.pipeline")
    periods = found.get("bench-all", {}).get("state", {}).get("periods", {})
    return sum(p["events"] for p in periods.values()) >= n


async def pipeline_throughput(
    bootstrap: str, prefix: str, n: int, start: datetime, worker: WorkerProcess
) -> tuple[float, bool]:
    """Events/s of one worker working off a backlog of n events: from the moment its streams
    resume ("Worker ready") to the moment every charge line is applied; and whether the worker
    had to restart on the way (its restart time counts, so such a run reads low)."""
    async with UsageProducer(bootstrap, prefix, envelope_size=500) as producer:
        for events in chunks(n, start):
            await producer.send_wire(events)
    expected_lines = charge_lines(n)
    worker.start()
    port = await wait_port(worker)
    restarted = False
    while True:
        try:
            applied = scrape(port).get("allotment_worker_lines_applied_total", 0)
        except OSError:
            applied = -1
        if not restarted and applied >= expected_lines:
            done = time.time()
            break
        if restarted and await all_charged(bootstrap, prefix, n):
            done = time.time()
            break
        if not worker.alive():
            if not worker.revive():
                raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
            # A restarted worker counts from zero: read the ledger from Kafka from now on.
            print("worker exited to re-read skipped records; restarted (time counts)")
            restarted = True
            while metrics_port(worker) in (None, port):
                await asyncio.sleep(0.1)
            port = await wait_port(worker)
            continue
        await asyncio.sleep(0.05 if not restarted else 1.0)
    first_ready = ready_times(worker)[0]
    return n / (done - first_ready), restarted


async def loop_latency(bootstrap: str, prefix: str, samples: int) -> list[float]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    latencies = []
    try:
        tps = [TopicPartition(POLICIES.name(prefix), p) for p in range(POLICIES.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        at = datetime.now(UTC)
        async with UsageProducer(bootstrap, prefix, envelope_size=1, linger_ms=0) as producer:
            for k in range(samples):
                budget_id = f"bench-lat-{k}"
                event = usage(f"lat-{k}", TENANT, at, 900, 200, feature=f"lat-{k}")
                await producer.send_wire([event])
                acked = time.perf_counter()
                while True:
                    batch = await consumer.getmany(timeout_ms=50)
                    hit = any(
                        orjson.loads(r.value).get("budget_id") == budget_id
                        and orjson.loads(r.value).get("policy") == "hard_stop"
                        for records in batch.values()
                        for r in records
                    )
                    if hit:
                        latencies.append((time.perf_counter() - acked) * 1000)
                        break
                    if time.perf_counter() - acked > 30:
                        raise RuntimeError(f"no PolicyChanged for {budget_id} within 30 s")
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--bootstrap", default=os.environ.get("ALLOTMENT_KAFKA_BOOTSTRAP",
                                                              "127.0.0.1:9092"))  # fmt: skip
    args = parser.parse_args()
    bootstrap = args.bootstrap
    load_before = os.getloadavg()
    start = datetime.now(UTC) - timedelta(hours=1)
    n = args.events

    raw_eps = await raw_ceiling(bootstrap, n, start)
    print(f"raw aiokafka consume + orjson decode: {raw_eps:,.0f} events/s")

    prefix = f"bench{uuid.uuid4().hex[:6]}"
    await ensure_topics(bootstrap, prefix)
    budgets = [
        budget_event(TENANT, "bench-all", {"name": "all", "limits": {"total_tokens": 10**15}}),
        budget_event(TENANT, "bench-team-a", {
            "name": "team a", "selector": {"team": ["a"]}, "limits": {"total_tokens": 10**15},
        }),
        budget_event(TENANT, "bench-big", {
            "name": "big", "selector": {"model": ["big"]}, "limits": {"total_tokens": 10**15},
        }),
    ] + [
        budget_event(TENANT, f"bench-lat-{k}", {
            "name": f"lat {k}", "selector": {"feature": [f"lat-{k}"]},
            "limits": {"total_tokens": 1000}, "at_limit": "hard_stop",
        })
        for k in range(args.latency_samples)
    ]  # fmt: skip
    await publish_budgets(bootstrap, prefix, budgets)
    with tempfile.TemporaryDirectory(prefix="allotment-bench-") as tmp:
        worker = WorkerProcess(prefix, Path(tmp) / "store", Path(tmp) / "worker.log", bootstrap)
        try:
            pipeline_eps, restarted = await pipeline_throughput(bootstrap, prefix, n, start, worker)
            print(f"pipeline (one worker, {charge_lines(n) / n:.2f} budgets"
                  f" per event): {pipeline_eps:,.0f} events/s")  # fmt: skip
            latencies = await loop_latency(bootstrap, prefix, args.latency_samples)
        finally:
            worker.stop()
            await delete_prefixed_topics(bootstrap, prefix)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"loop latency (event acked -> PolicyChanged readable): p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms over {len(latencies)} crossings")  # fmt: skip
    print(f"machine: {os.cpu_count()} cores, load before {load_before}, after {os.getloadavg()}")
    print(
        orjson.dumps({
            "raw_consume_eps": round(raw_eps),
            "pipeline_eps": round(pipeline_eps),
            "ratio": round(pipeline_eps / raw_eps, 3),
            "loop_latency_p50_ms": round(p50, 1),
            "loop_latency_p99_ms": round(p99, 1),
            "events": n,
            "cores": os.cpu_count(),
            "latency_samples": len(latencies),
            "load_avg_1m_before": round(load_before[0], 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "median_latency_ms": round(statistics.median(latencies), 1),
            "worker_restarted": restarted,
            # The worker's table store and dedupe index: the CLI's default unless the
            # environment names another (production runs rocksdb).
            "store": os.environ.get("ALLOTMENT_STORE", "rocksdb"),
        }).decode()
    )  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
