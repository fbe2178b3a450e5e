"""The loop closed: usage the proxy emits is charged by a real `allotment worker`, whose
threshold crossings and policies flow back to the proxy, which then bounds and stops traffic.

Phase 1 spends half the budget and waits for the 50% crossing to reach the proxy. Phase 2 sends
a burst of concurrent requests: reservations against the crossing's headroom (minus what was
forwarded since) keep the overshoot under one request's estimate, before the pipeline has even
seen the burst. Phase 3 trickles on until the worker's hard_stop policy arrives; it refuses on
its own from then on.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import openai
from fakes.provider import FakeProvider
from fakes.proxy_harness import publish, read_usage, running_proxy, until
from pipeline_harness import WorkerProcess, budget_event, delete_prefixed_topics

LIMIT = 3000
USAGE = {"x-fake-usage": '{"input":100,"output":20}'}  # 120 tokens a request
CONTENT = "x" * 700  # the proxy estimates at least 700 / 4 + 20 > 120 tokens: a true bound
ESTIMATE_BOUND = 260  # one request's estimate: ~800 bytes of JSON / 4 + max_tokens 20


async def test_proxy_and_worker_close_the_loop(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = f"loop-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "loop",
        "selector": {"team": ["support"]},
        "limits": {"total_tokens": LIMIT},
        "thresholds": [50, 90, 100],
        "at_limit": "hard_stop",
    }
    await publish(kafka_bootstrap, topic_prefix, [budget_event(tenant, "loop", spec)])
    worker = WorkerProcess(
        topic_prefix,
        tmp_path / "store",
        tmp_path / "worker.log",
        kafka_bootstrap,
        ["--store", "memory"],
    ).start()
    try:
        async with (
            FakeProvider() as fake,
            running_proxy(
                kafka_bootstrap, topic_prefix, fake.url, tmp_path / "spool", tenant
            ) as run,
        ):
            client = openai.AsyncOpenAI(base_url=f"{run.url}/v1", api_key=run.secret, max_retries=0)

            async def one() -> int:
                try:
                    await client.chat.completions.create(
                        model="gpt-4o",
                        max_tokens=20,
                        extra_headers=USAGE,
                        messages=[{"role": "user", "content": CONTENT}],
                    )
                except openai.RateLimitError:
                    return 429
                return 200

            # Phase 1: 13 requests = 1560 tokens, past 50%; the worker's crossing comes back.
            for _ in range(13):
                assert await one() == 200
            cache = run.proxy.cache
            await until(
                lambda: "loop" in cache.states and cache.states["loop"].consumed >= LIMIT // 2,
                120,
                f"the 50% crossing to reach the proxy\n{worker.log_tail()}",
            )

            # Phase 2: a burst far past the limit, faster than the pipeline can follow.
            statuses = await asyncio.gather(*(one() for _ in range(40)))
            assert 429 in statuses and 200 in statuses

            # Phase 3: reservations are conservative (estimates exceed real use), so the proxy
            # refused early; trickle on until the worker sees 100% and announces hard_stop.
            state = cache.states["loop"]
            sent = 13 + 40
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while state.decision is None or state.decision.policy != "hard_stop":
                if loop.time() > deadline:
                    raise AssertionError(f"no hard_stop from the worker\n{worker.log_tail()}")
                await one()
                sent += 1
                await asyncio.sleep(0.2)
            try:
                await client.chat.completions.create(
                    model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "x"}]
                )
                raise AssertionError("a request went through after the hard_stop policy")
            except openai.RateLimitError as refused:
                assert int(refused.response.headers["retry-after"]) >= 1

        events = await read_usage(kafka_bootstrap, topic_prefix, sent + 1)
        used = sum(e.total for e in events if e.decision == "forwarded")
        overshoot = used - LIMIT
        print(
            f"\nclosed loop: forwarded {used} tokens against a limit of {LIMIT}: "
            f"overshoot {overshoot} (bound {ESTIMATE_BOUND})"
        )
        assert overshoot < ESTIMATE_BOUND
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
