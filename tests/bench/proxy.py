"""Benchmark: what the enforcement proxy adds to a request, and what one decision costs.

One run, one fake upstream (tests/fakes/provider.py, its own process), called directly and
through the proxy (`allotment proxy`, its own process, with a budget and a policy loaded from
Kafka so every request really matches a budget and is decided). The client is aiohttp on uvloop,
in this process.

- Sequential: requests alternate direct / proxied; added latency = proxied pN - direct pN.
- Concurrent: 64 client tasks, direct then proxied; requests/s through the proxy, added p99.
- Decision alone: PolicyCache.matched + decide + settle in-process, µs per request.

Run: `.venv/bin/python tests/bench/proxy.py [--requests 2000] [--concurrent-requests 6400]`.
The last line is JSON with direct_p50_ms, added_p50_ms, added_p99_ms, concurrent_rps,
concurrent_added_p99_ms, decision_us.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import uvloop  # noqa: E402

SECRET = "sk-bench"
BODY = orjson.dumps(
    {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


async def load_policy(bootstrap: str, prefix: str) -> bool:
    """Create the bench topics and publish one matching budget with an `allow` policy."""
    from fakes.proxy_harness import budget_defined, policy_changed, publish

    from services.common.kafka import ensure_topics

    try:
        await asyncio.wait_for(ensure_topics(bootstrap, prefix), 20)
        await publish(
            bootstrap,
            prefix,
            [
                budget_defined("bench", "bench-budget", total=10**12),
                policy_changed(
                    "bench", "bench-budget", "allow", consumed=0, limit=10**12, at_limit="hard_stop"
                ),
            ],
        )
        return True
    except Exception as exc:
        print(f"kafka unavailable ({exc!r}): the proxy runs fail-open, usage spooled")
        return False


async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from schemas.topics import ALL

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [s.name(prefix) for s in ALL if s.name(prefix) in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    async with session.post(url, data=BODY, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {await response.text()}")
    return (time.perf_counter() - start) * 1000


async def sequential(
    session: aiohttp.ClientSession, direct: str, proxied: str, headers: dict[str, str], n: int
) -> tuple[list[float], list[float]]:
    for _ in range(200):  # warm both paths (connections, memoised matches)
        await timed(session, direct, headers)
        await timed(session, proxied, headers)
    d, p = [], []
    for _ in range(n):
        d.append(await timed(session, direct, headers))
        p.append(await timed(session, proxied, headers))
    return d, p


async def concurrent(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], clients: int, total: int
) -> tuple[float, list[float]]:
    per_client = total // clients
    latencies: list[float] = []

    async def client() -> None:
        for _ in range(per_client):
            latencies.append(await timed(session, url, headers))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return per_client * clients / (time.perf_counter() - start), latencies


async def client_p50s(url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    """The upstream-client choice, measured: p50 of the same direct call through aiohttp's
    ClientSession and through httpx.AsyncClient (its cost is what a proxy built on it adds)."""
    import httpx

    results: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    async with aiohttp.ClientSession() as session, httpx.AsyncClient() as client:
        for i in range(n + 100):
            start = time.perf_counter()
            async with session.post(url, data=BODY, headers=headers) as response:
                await response.read()
            middle = time.perf_counter()
            (await client.post(url, content=BODY, headers=headers)).read()
            end = time.perf_counter()
            if i >= 100:
                results["aiohttp"].append((middle - start) * 1000)
                results["httpx"].append((end - middle) * 1000)
    return {name: round(pct(values, 0.5), 3) for name, values in results.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used (load-independent cost measure)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def decision_us(loops: int) -> float:
    """matched + decide + settle for a key whose tenant has 20 budgets, 3 of them matching,
    all resetting at the same time (the usual case, and the slow one: ties)."""
    from schemas.budgets import BudgetDefined, BudgetSpec
    from schemas.signals import PolicyChanged
    from services.proxy.enforcement import PolicyCache
    from services.proxy.keys import VirtualKey

    now = datetime.now(UTC)
    cache = PolicyCache()
    for i in range(20):
        selector = {"team": ["support"]} if i < 3 else {"team": [f"team-{i}"]}
        spec = BudgetSpec.model_validate(
            {
                "name": f"b{i}",
                "limits": {"total_tokens": 10**9},
                "selector": selector,
                "at_limit": "hard_stop",
            }
        )
        cache.apply_budget(
            BudgetDefined(
                budget_id=f"b{i}",
                tenant="acme",
                revision=1,
                occurred_at=now,
                actor="bench",
                spec=spec,
            )
        )
        cache.apply_policy(
            PolicyChanged(
                tenant="acme",
                budget_id=f"b{i}",
                period_key="2026-11",
                policy="allow",
                at_limit="hard_stop",
                reason="bench",
                effective_at=now,
                reset_at=now + timedelta(days=3),
                consumed=10**8,
                limit=10**9,
                remaining=9 * 10**8,
                target_model="small",
            )
        )
    key = VirtualKey("k", "acme", team="support", feature="copilot")
    now_ms = int(time.time() * 1000)
    matched_fn, decide, settle = cache.matched, cache.decide, cache.settle
    for _ in range(1000):
        settle(
            decide(matched_fn(key, "copilot", (), "gpt-4o", "openai"), 10, 10, now_ms), 0, 0, now_ms
        )
    start = time.perf_counter()
    for _ in range(loops):
        verdict = decide(matched_fn(key, "copilot", (), "gpt-4o", "openai"), 10, 10, now_ms)
        settle(verdict, 0, 0, now_ms)
    elapsed = time.perf_counter() - start
    if verdict.policy != "allow" or len(verdict.matched) != 3:
        raise RuntimeError(f"unexpected decision {verdict.policy}")
    return elapsed / loops * 1e6


async def main(args: argparse.Namespace) -> dict[str, float]:
    from services.common.settings import StackSettings
    from services.proxy.keys import hash_key

    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    bootstrap = StackSettings.from_env().kafka_bootstrap
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    kafka = await load_policy(bootstrap, prefix)
    fake_port, proxy_port = free_port(), free_port()
    python = sys.executable
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}",
        "ALLOTMENT_KAFKA_BOOTSTRAP": bootstrap,
        "ALLOTMENT_TOPIC_PREFIX": prefix,
        "ALLOTMENT_PROXY_OPENAI_UPSTREAM": f"http://127.0.0.1:{fake_port}",
        "ALLOTMENT_PROXY_KEYS": orjson.dumps(
            [
                {
                    "id": "bench-key",
                    "key_sha256": hash_key(SECRET),
                    "tenant": "bench",
                    "team": "support",
                }
            ]
        ).decode(),
        "ALLOTMENT_PROXY_SPOOL_DIR": tempfile.mkdtemp(prefix="proxy-bench-spool-"),
    }
    procs = [
        subprocess.Popen(
            [python, str(ROOT / "tests/fakes/provider.py"), "--port", str(fake_port)],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [str(Path(python).parent / "allotment"), "proxy", "--port", str(proxy_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        await wait_port(fake_port)
        await wait_port(proxy_port)
        direct = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
        proxied = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        headers = {"authorization": f"Bearer {SECRET}", "content-type": "application/json"}
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector) as session:
            if kafka:  # wait until the proxy has read the policy
                for _ in range(100):
                    async with session.post(proxied, data=BODY, headers=headers) as r:
                        if r.headers.get("x-allotment-budget") == "bench-budget":
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the proxy never matched the bench budget")
            d, p = await sequential(session, direct, proxied, headers, args.requests)
            _, cd = await concurrent(session, direct, headers, 64, args.concurrent_requests)
            clients = await client_p50s(direct, headers, min(args.requests, 1000))
            cpu_before = cpu_seconds(procs[1].pid)
            rps, cp = await concurrent(session, proxied, headers, 64, args.concurrent_requests)
            await asyncio.sleep(0.5)  # let the usage batch of the last requests be spooled
            cpu_per_request = (cpu_seconds(procs[1].pid) - cpu_before) / args.concurrent_requests
            direct_rps, _ = await concurrent(session, direct, headers, 64, args.concurrent_requests)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        if kafka:
            await delete_topics(bootstrap, prefix)
    decision = decision_us(args.decision_loops)
    result = {
        "direct_p50_ms": round(pct(d, 0.5), 3),
        "proxied_p50_ms": round(pct(p, 0.5), 3),
        "added_p50_ms": round(pct(p, 0.5) - pct(d, 0.5), 3),
        "added_p99_ms": round(pct(p, 0.99) - pct(d, 0.99), 3),
        "added_mean_ms": round(statistics.fmean(p) - statistics.fmean(d), 3),
        "concurrent_rps": round(rps, 1),
        "concurrent_direct_rps": round(direct_rps, 1),
        "concurrent_added_p99_ms": round(pct(cp, 0.99) - pct(cd, 0.99), 3),
        "concurrent_added_p50_ms": round(pct(cp, 0.5) - pct(cd, 0.5), 3),
        "client_aiohttp_p50_ms": clients["aiohttp"],
        "client_httpx_p50_ms": clients["httpx"],
        "proxy_cpu_us_per_request": round(cpu_per_request * 1e6, 1),
        "decision_us": round(decision, 2),
        "policy_loaded_from_kafka": kafka,
    }
    print(
        f"sequential ({args.requests} each): direct p50 {result['direct_p50_ms']} ms, "
        f"proxied p50 {result['proxied_p50_ms']} ms, added p50 {result['added_p50_ms']} ms, "
        f"added p99 {result['added_p99_ms']} ms"
    )
    print(
        f"64 concurrent ({args.concurrent_requests} each): {result['concurrent_rps']} req/s "
        f"through the proxy ({result['concurrent_direct_rps']} direct), added p99 "
        f"{result['concurrent_added_p99_ms']} ms"
    )
    print(
        f"proxy CPU per request (concurrent phase, incl. usage emission): "
        f"{result['proxy_cpu_us_per_request']} µs"
    )
    print(
        f"upstream client, direct call p50: aiohttp {clients['aiohttp']} ms, "
        f"httpx {clients['httpx']} ms"
    )
    print(f"decision alone: {result['decision_us']} µs")
    print(f"load average after: {os.getloadavg()}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="proxy latency benchmark")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrent-requests", type=int, default=6400)
    parser.add_argument("--decision-loops", type=int, default=200_000)
    figures = uvloop.run(main(parser.parse_args()))
    print(orjson.dumps(figures).decode())
