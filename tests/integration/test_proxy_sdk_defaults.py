"""The official SDKs as users build them, with their defaults (review A, findings 2 and 3).

- httpx offers `br` and `zstd` when their decoders are installed on the client. The proxy used
  to forward that offer; an upstream answering in br (as providers behind a CDN do) gave a 502
  and the usage the provider billed was never recorded.
- A hard_stop 429 lasts until the budget resets. Without `x-should-retry: false` the SDKs
  retry it at their default max_retries=2; the Anthropic one first sleeps the whole Retry-After
  (hours).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from fakes.provider import FakeProvider
from fakes.proxy_harness import (
    budget_defined,
    policy_changed,
    publish,
    read_usage,
    running_proxy,
    unique_tenant,
    until,
)

MESSAGES = [{"role": "user", "content": "hello"}]
OFFERS_BR = {"accept-encoding": "gzip, deflate, br, zstd"}  # httpx with brotli and zstandard
DEADLINE_S = 30  # an SDK that sleeps out Retry-After (3 hours here) fails the test at this point


async def test_a_client_offering_br_gets_a_decoded_answer_and_its_usage_is_recorded(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    async with FakeProvider(compress=True) as fake:
        async with httpx.AsyncClient() as http:  # the premise: asked for br, the fake sends br
            direct = await http.post(
                f"{fake.url}/v1/chat/completions", json={"model": "m"}, headers=OFFERS_BR
            )
        assert direct.headers["content-encoding"] == "br"
        async with running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run:
            oai = openai.AsyncOpenAI(
                base_url=f"{run.url}/v1", api_key=run.secret, default_headers=OFFERS_BR
            )
            completion = await oai.chat.completions.create(
                model="chat-br",
                messages=MESSAGES,
                extra_headers={"x-fake-usage": '{"input":1200,"output":300}'},
            )
            assert completion.usage is not None and completion.usage.total_tokens == 1500
            ant = anthropic.AsyncAnthropic(
                base_url=run.url, api_key=run.secret, default_headers=OFFERS_BR
            )
            message = await ant.messages.create(
                model="claude-br",
                max_tokens=50,
                messages=MESSAGES,
                extra_headers={"x-fake-usage": '{"input":70,"output":7}'},
            )
            assert message.usage.output_tokens == 7
        upstream_offers = [r.headers.get("Accept-Encoding", "") for r in fake.received[1:]]
        assert len(upstream_offers) == 2 and not any("br" in o for o in upstream_offers)
    events = {e.request_model: e for e in await read_usage(kafka_bootstrap, topic_prefix, 2)}
    assert (events["chat-br"].total, events["chat-br"].usage_status) == (1500, "reported")
    assert (events["claude-br"].total, events["claude-br"].usage_status) == (77, "reported")


async def test_hard_stop_fails_sdk_clients_at_default_retries_at_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    await publish(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_defined(tenant, "capped"),
            policy_changed(tenant, "capped", "hard_stop", consumed=1_000_500),
        ],
    )
    async with (
        FakeProvider() as fake,
        running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run,
    ):
        oai = openai.AsyncOpenAI(base_url=f"{run.url}/v1", api_key=run.secret)
        ant = anthropic.AsyncAnthropic(base_url=run.url, api_key=run.secret)
        refused = run.proxy.app.requests  # type: ignore[union-attr]

        with pytest.raises(openai.RateLimitError) as caught:
            await asyncio.wait_for(
                oai.chat.completions.create(model="gpt-4o", messages=MESSAGES), DEADLINE_S
            )
        headers = caught.value.response.headers
        assert 3 * 3600 - 60 < int(headers["retry-after"]) <= 3 * 3600
        assert headers["x-should-retry"] == "false"
        assert refused[("/v1/chat/completions", 429, "hard_stop")] == 1  # not retried

        with pytest.raises(anthropic.RateLimitError) as refused_ant:
            await asyncio.wait_for(
                ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES),
                DEADLINE_S,
            )
        headers = refused_ant.value.response.headers
        assert 3 * 3600 - 60 < int(headers["retry-after"]) <= 3 * 3600
        assert refused[("/v1/messages", 429, "hard_stop")] == 1
        assert fake.received == []  # nothing went upstream

        # degrade_route is unchanged: forwarded, rewritten, nothing said about retries
        await publish(
            kafka_bootstrap,
            topic_prefix,
            [
                policy_changed(
                    tenant, "capped", "degrade_route", 950_000, target_model="gpt-4o-mini"
                )
            ],
        )
        state = run.proxy.cache.states["capped"]
        await until(lambda: state.decision is not None and state.decision.policy == "degrade_route")
        raw = await oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.headers["x-allotment-routed"] == "gpt-4o -> gpt-4o-mini"
        assert "x-should-retry" not in raw.headers
        assert fake.last().body["model"] == "gpt-4o-mini"
