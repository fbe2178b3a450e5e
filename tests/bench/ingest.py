"""Ingest throughput into the real broker: native batches of 500, and OTLP protobuf exports.

The service runs as one uvicorn process (`services.ingest.app:app_from_env`, uvloop +
httptools) under a fresh topic prefix; this process is the client (httpx, a few requests in
flight). Every request must be answered 2xx, which the service sends only after Kafka acked
(acks=all); the events on the usage topic are counted at the end to confirm nothing was lost.

    .venv/bin/python tests/bench/ingest.py [--batches 200] [--otlp-batches 100]

Prints the figures, then one JSON line with `batch_eps` and `otlp_eps` (events per second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schemas.topics import ALL, USAGE  # noqa: E402
from services.common.kafka import ensure_topics  # noqa: E402
from services.common.settings import StackSettings  # noqa: E402
from services.ingest.keys import hash_key  # noqa: E402

KEY = "bench-ingest-key"


def native_bodies(run: str, batches: int, size: int) -> list[bytes]:
    bodies = []
    for b in range(batches):
        records = [
            {
                "source_request_id": f"{run}-{b}-{i}",
                "occurred_at": "2026-11-27T10:00:00Z",
                "input_uncached": 120 + i,
                "cache_read": 1024,
                "output": 80,
                "reasoning": 16,
                "team": "search",
                "feature": "copilot",
                "user": f"user-{i % 50}",
                "provider": "openai",
                "request_model": "gpt-4o",
            }
            for i in range(size)
        ]
        bodies.append(orjson.dumps(records))
    return bodies


def otlp_bodies(batches: int, spans: int) -> list[bytes]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def attr(key: str, value: int | str) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=value))

    bodies = []
    start = time.time_ns()
    for b in range(batches):
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.append(attr("service.name", "copilot"))
        scope = resource_spans.scope_spans.add()
        trace_id = uuid.uuid4().bytes
        for i in range(spans):
            span = scope.spans.add()
            span.trace_id = trace_id
            span.span_id = (b * spans + i + 1).to_bytes(8, "big")
            span.name = "chat gpt-4o"
            span.start_time_unix_nano = start + i
            span.end_time_unix_nano = start + i + 1000
            span.attributes.extend(
                [
                    attr("gen_ai.operation.name", "chat"),
                    attr("gen_ai.provider.name", "openai"),
                    attr("gen_ai.request.model", "gpt-4o"),
                    attr("gen_ai.usage.input_tokens", 1400),
                    attr("gen_ai.usage.cache_read.input_tokens", 1024),
                    attr("gen_ai.usage.output_tokens", 90),
                    attr("user.id", f"user-{i % 50}"),
                ]
            )
        bodies.append(request.SerializeToString())
    return bodies


async def post_all(
    url: str, path: str, bodies: list[bytes], content_type: str, concurrency: int
) -> float:
    """Post every body with `concurrency` requests in flight; returns the elapsed seconds."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": content_type}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post(path, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began


async def count_events(bootstrap: str, prefix: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = USAGE.name(prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(USAGE.partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)
        total = 0
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for tp, records in (await consumer.getmany(*pending, timeout_ms=1000)).items():
                total += sum(len(orjson.loads(r.value)["events"]) for r in records)
                if records and records[-1].offset >= ends[tp] - 1:
                    pending.discard(tp)
        return total
    finally:
        await consumer.stop()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([spec.name(prefix) for spec in ALL])
    finally:
        await admin.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(port: int, bootstrap: str, prefix: str) -> subprocess.Popen[bytes]:
    keys = {"keys": [{"id": "bench", "tenant": "bench", "key_sha256": hash_key(KEY)}]}
    env = {
        **os.environ,
        "ALLOTMENT_INGEST_KEYS": orjson.dumps(keys).decode(),
        "ALLOTMENT_TOPIC_PREFIX": prefix,
        "ALLOTMENT_KAFKA_BOOTSTRAP": bootstrap,
    }
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "services.ingest.app:app_from_env",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError("ingest server exited")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("ingest server did not become healthy")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--otlp-batches", type=int, default=100)
    parser.add_argument("--spans", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    settings = StackSettings.from_env()
    bootstrap = settings.kafka_bootstrap
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, prefix)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    run = uuid.uuid4().hex[:8]
    warmup = native_bodies(f"{run}w", 5, args.batch_size)
    natives = native_bodies(run, args.batches, args.batch_size)
    otlps = otlp_bodies(args.otlp_batches, args.spans)
    proc = start_server(port, bootstrap, prefix)
    try:
        await wait_healthy(url, proc)
        await post_all(url, "/v1/usage", warmup, "application/json", args.concurrency)

        cpu_before = cpu_seconds(proc.pid)
        client_before = cpu_seconds(os.getpid())
        batch_s = await post_all(url, "/v1/usage", natives, "application/json", args.concurrency)
        cpu_batch = cpu_seconds(proc.pid) - cpu_before
        client_batch = cpu_seconds(os.getpid()) - client_before
        batch_events = args.batches * args.batch_size

        cpu_before = cpu_seconds(proc.pid)
        otlp_s = await post_all(
            url, "/v1/traces", otlps, "application/x-protobuf", args.concurrency
        )
        cpu_otlp = cpu_seconds(proc.pid) - cpu_before
        otlp_events = args.otlp_batches * args.spans
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    on_topic = await count_events(bootstrap, prefix)
    await delete_topics(bootstrap, prefix)

    expected = batch_events + otlp_events + len(warmup) * args.batch_size
    batch_eps = batch_events / batch_s
    otlp_eps = otlp_events / otlp_s
    load = os.getloadavg()[0]
    print(
        f"native batches: {batch_events} events in {batch_s:.2f}s = {batch_eps:,.0f} events/s "
        f"(server CPU {cpu_batch / batch_events * 1e6:.1f} us/event, server busy "
        f"{cpu_batch / batch_s:.0%}, client busy {client_batch / batch_s:.0%})"
    )
    print(
        f"OTLP protobuf:  {otlp_events} spans in {otlp_s:.2f}s = {otlp_eps:,.0f} events/s "
        f"(server CPU {cpu_otlp / otlp_events * 1e6:.1f} us/event)"
    )
    print(f"events on the usage topic: {on_topic} (expected {expected}); load average {load:.1f}")
    if on_topic != expected:
        raise SystemExit(f"lost or extra events: {on_topic} on the topic, {expected} sent")
    print(
        orjson.dumps(
            {
                "batch_eps": round(batch_eps),
                "otlp_eps": round(otlp_eps),
                "batch_size": args.batch_size,
                "events_on_topic": on_topic,
                "server_cpu_us_per_batch_event": round(cpu_batch / batch_events * 1e6, 1),
                "server_cpu_us_per_otlp_event": round(cpu_otlp / otlp_events * 1e6, 1),
                "server_busy_batch": round(cpu_batch / batch_s, 2),
                "load_average": round(load, 1),
            }
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
