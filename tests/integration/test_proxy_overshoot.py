"""200 concurrent requests against a hard_stop budget at 99 percent: how far past the limit?

The budget's only signal is the pipeline's crossing of its 99% threshold (below the line the
pipeline announces no policy). The proxy reserves each admitted request's estimate (request
bytes / 4 + its max_tokens) against the headroom that crossing reported, and refuses once the
headroom is used up.
With estimates that bound the real usage (the fake provider's counts do), the admitted requests
can exceed the headroom by less than one request's estimate. Without reservations all 200 would
be forwarded. The test prints the measured overshoot and asserts only that bound.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import orjson
from fakes.provider import FakeProvider
from fakes.proxy_harness import (
    budget_defined,
    publish,
    read_usage,
    running_proxy,
    threshold_crossed,
    unique_tenant,
)

LIMIT = 1_000_000
CONSUMED = 990_000  # 99 percent
CONCURRENT = 200
MAX_TOKENS = 50


async def test_concurrent_requests_near_the_limit_overshoot_by_less_than_one_estimate(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    await publish(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_defined(
                tenant, "near-limit", total=LIMIT, thresholds=[75, 90, 99], at_limit="hard_stop"
            ),
            threshold_crossed(tenant, "near-limit", 99, consumed=CONSUMED, limit=LIMIT),
        ],
    )
    async with (
        FakeProvider() as fake,
        running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run,
    ):
        client = openai.AsyncOpenAI(base_url=f"{run.url}/v1", api_key=run.secret, max_retries=0)

        async def one(i: int) -> int:
            # a long prompt, so that 200 requests' estimates exceed the 10,000-token headroom
            content = f"request {i} " + "lorem ipsum dolor sit amet " * 40
            try:
                await client.chat.completions.create(
                    model="gpt-4o",
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": content}],
                    extra_headers={"x-fake-delay-ms": "200"},  # all in flight at once
                )
            except openai.RateLimitError:
                return 429
            return 200

        statuses = await asyncio.gather(*(one(i) for i in range(CONCURRENT)))
        admitted = statuses.count(200)
        state = run.proxy.cache.states["near-limit"]
        assert state.reserved == 0, "every reservation is released"

        events = await read_usage(kafka_bootstrap, topic_prefix, CONCURRENT)
        forwarded = [e for e in events if e.decision == "forwarded"]
        used = sum(e.total for e in forwarded)
        headroom = LIMIT - CONSUMED
        overshoot = used - headroom
        # compact JSON is never longer than what the SDK sends, so this bound is the stricter
        largest_estimate = max(len(_body(i)) // 4 + MAX_TOKENS for i in range(CONCURRENT))
        naive = sum(e.total for e in forwarded) / max(1, len(forwarded)) * CONCURRENT - headroom
        print(
            f"\novershoot: admitted {admitted}/{CONCURRENT}, used {used} tokens against a "
            f"headroom of {headroom}: overshoot {overshoot} tokens "
            f"({overshoot / LIMIT:+.4%} of the limit); bound {largest_estimate}; "
            f"without reservations about {naive:.0f}"
        )
        assert admitted == len(forwarded) == len(fake.received)
        assert 0 < admitted < CONCURRENT
        assert overshoot < largest_estimate
        assert state.headroom() == headroom - used  # what was forwarded counts from now on


def _body(i: int) -> bytes:
    content = f"request {i} " + "lorem ipsum dolor sit amet " * 40
    return orjson.dumps(
        {
            "messages": [{"role": "user", "content": content}],
            "model": "gpt-4o",
            "max_tokens": MAX_TOKENS,
        }
    )
