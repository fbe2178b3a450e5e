"""The proxy as clients see it: the official OpenAI and Anthropic SDKs against it, the fake
provider behind it, budgets and policies read from the real Kafka topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest
from fakes.provider import FakeProvider
from fakes.proxy_harness import (
    Running,
    budget_defined,
    policy_changed,
    publish,
    read_usage,
    running_proxy,
    unique_tenant,
    until,
)

MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def proxy(
    kafka_bootstrap: str, topic_prefix: str, fake: FakeProvider, tmp_path: Path
) -> AsyncIterator[Running]:
    tenant = unique_tenant()
    await publish(
        kafka_bootstrap,
        topic_prefix,
        [
            budget_defined(tenant, "support", selector={"team": ["support"]}),
            policy_changed(tenant, "support", "allow", consumed=100_000),
        ],
    )
    async with running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run:
        yield run


def oai(run: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{run.url}/v1", api_key=run.secret, max_retries=0)


def ant(run: Running) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=run.url, api_key=run.secret, max_retries=0)


async def test_allow_forwards_and_reports_the_tightest_budget(
    proxy: Running, fake: FakeProvider
) -> None:
    raw = await oai(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert fake.last().body["model"] == "gpt-4o"
    assert raw.headers["x-allotment-policy"] == "allow"
    assert raw.headers["x-allotment-budget"] == "support"
    assert int(raw.headers["x-allotment-budget-remaining-tokens"]) == 900_000
    reset = datetime.fromisoformat(raw.headers["x-allotment-budget-reset"])
    assert reset > datetime.now(UTC)
    # the virtual key never reaches the provider
    assert "authorization" not in {k.lower() for k in fake.last().headers}
    async with httpx.AsyncClient(base_url=proxy.url) as http:
        metrics = (await http.get("/metrics")).text
        ready = await http.get("/readyz")
    assert 'allotment_proxy_requests_total{endpoint="/v1/chat/completions",policy="allow",' in (
        metrics
    )
    assert "allotment_proxy_policies_caught_up 1.0" in metrics
    assert ready.status_code == 200


async def test_degrade_rewrites_the_model_upstream(
    proxy: Running, fake: FakeProvider, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await publish(
        kafka_bootstrap,
        topic_prefix,
        [
            policy_changed(
                proxy.tenant,
                "support",
                "degrade_route",
                consumed=950_000,
                target_model="gpt-4o-mini",
                concise_prompt=True,
                cache_ttl_seconds=300,
            )
        ],
    )
    state = proxy.proxy.cache.states["support"]
    await until(lambda: state.decision is not None and state.decision.policy == "degrade_route")

    raw = await oai(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert raw.headers["x-allotment-policy"] == "degrade_route"
    assert raw.headers["x-allotment-routed"] == "gpt-4o -> gpt-4o-mini"
    assert "x-should-retry" not in raw.headers  # only a hard_stop refusal says it
    upstream = fake.last("/v1/chat/completions").body
    assert upstream["model"] == "gpt-4o-mini"
    assert upstream["messages"][0]["role"] == "system"  # the concise variant
    assert upstream["prompt_cache_retention"] == "in_memory"

    message = await ant(proxy).messages.create(
        model="claude-opus", max_tokens=64, messages=MESSAGES
    )
    assert fake.last("/v1/messages").body["model"] == "gpt-4o-mini"
    assert message.model == "gpt-4o-mini"

    events = await read_usage(kafka_bootstrap, topic_prefix, 2)
    degraded = [e for e in events if e.decision == "degraded"]
    assert {(e.routed_from_model, e.routed_to_model) for e in degraded} == {
        ("gpt-4o", "gpt-4o-mini"),
        ("claude-opus", "gpt-4o-mini"),
    }


async def test_hard_stop_answers_429_with_retry_after_in_each_providers_shape(
    kafka_bootstrap: str, topic_prefix: str, fake: FakeProvider, tmp_path: Path
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
    async with running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run:
        # The SDKs as users build them (default max_retries=2): `x-should-retry: false` makes
        # them fail at once. Without it Anthropic's sleeps out Retry-After (3 hours here, so the
        # deadline fails the test) and OpenAI's asks twice more.
        answered = run.proxy.app.requests  # type: ignore[union-attr]
        default_oai = openai.AsyncOpenAI(base_url=f"{run.url}/v1", api_key=run.secret)
        with pytest.raises(openai.RateLimitError) as caught:
            await asyncio.wait_for(
                default_oai.chat.completions.create(model="gpt-4o", messages=MESSAGES), 30
            )
        response = caught.value.response
        retry_after = int(response.headers["retry-after"])
        assert 3 * 3600 - 60 < retry_after <= 3 * 3600
        assert response.headers["x-should-retry"] == "false"
        assert answered[("/v1/chat/completions", 429, "hard_stop")] == 1  # not retried
        message = caught.value.body["message"]  # type: ignore[index]
        assert "capped budget" in message and "1,000,500 of 1,000,000" in message
        assert "resets at" in message

        default_ant = anthropic.AsyncAnthropic(base_url=run.url, api_key=run.secret)
        with pytest.raises(anthropic.RateLimitError) as refused:
            await asyncio.wait_for(
                default_ant.messages.create(model="claude", max_tokens=10, messages=MESSAGES), 30
            )
        body = refused.value.body
        assert body["type"] == "error"  # type: ignore[index]
        assert body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert 3 * 3600 - 60 < int(refused.value.response.headers["retry-after"]) <= 3 * 3600
        assert answered[("/v1/messages", 429, "hard_stop")] == 1
        assert fake.received == []  # nothing went upstream

        events = await read_usage(kafka_bootstrap, topic_prefix, 2)
        assert [e.decision for e in events] == ["blocked", "blocked"]
        assert all(e.total == 0 and e.tenant == tenant for e in events)


async def test_usage_events_carry_exact_tokens(
    proxy: Running, kafka_bootstrap: str, topic_prefix: str
) -> None:
    openai_usage = {
        "headers": {"x-fake-usage": '{"input":1000,"cached":600,"output":300,"reasoning":200}'}
    }
    anthropic_usage = {
        "headers": {"x-fake-usage": '{"input":10,"cache_write":300,"cached":5000,"output":42}'}
    }
    client = oai(proxy)
    await client.chat.completions.create(
        model="chat-json", messages=MESSAGES, extra_headers=openai_usage["headers"]
    )
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="chat-sse",
            messages=MESSAGES,
            stream=True,
            extra_headers=openai_usage["headers"],
        )
    ]
    assert all(chunk.choices for chunk in chunks)  # the usage chunk we added is stripped
    asked = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="chat-sse-asked",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=openai_usage["headers"],
        )
    ]
    assert asked[-1].usage is not None and asked[-1].usage.prompt_tokens == 1000
    await client.responses.create(
        model="responses-json", input="hi", extra_headers=openai_usage["headers"]
    )
    stream = await client.responses.create(
        model="responses-sse", input="hi", stream=True, extra_headers=openai_usage["headers"]
    )
    async for _ in stream:
        pass
    await client.embeddings.create(
        model="embed", input=["a", "b"], extra_headers={"x-fake-usage": '{"input":8}'}
    )
    await ant(proxy).messages.create(
        model="claude-json",
        max_tokens=100,
        messages=MESSAGES,
        extra_headers=anthropic_usage["headers"],
    )
    async with ant(proxy).messages.stream(
        model="claude-sse",
        max_tokens=100,
        messages=MESSAGES,
        extra_headers=anthropic_usage["headers"],
    ) as s:
        final = await s.get_final_message()
    assert final.usage.output_tokens == 42

    events = {e.request_model: e for e in await read_usage(kafka_bootstrap, topic_prefix, 8)}
    assert len(events) == 8
    for model in ("chat-json", "chat-sse", "chat-sse-asked", "responses-json", "responses-sse"):
        e = events[model]
        parts = (e.input_uncached, e.cache_read, e.cache_write, e.output, e.reasoning)
        assert parts == (400, 600, 0, 300, 200), model
        assert (e.input_total, e.total, e.usage_status) == (1000, 1300, "reported")
        assert (e.provider, e.decision) == ("openai", "forwarded")
    embed = events["embed"]
    assert (embed.input_uncached, embed.output, embed.total) == (8, 0, 8)
    for model in ("claude-json", "claude-sse"):
        e = events[model]
        parts = (e.input_uncached, e.cache_read, e.cache_write, e.output, e.reasoning)
        assert parts == (10, 5000, 300, 42, 0), model
        assert (e.provider, e.total, e.usage_status) == ("anthropic", 5352, "reported")
    e = events["chat-json"]
    assert (e.tenant, e.team, e.feature, e.virtual_key) == (
        proxy.tenant,
        "support",
        "copilot",
        "test-key",
    )
    assert e.source == "proxy" and e.response_model == "chat-json"


async def test_interrupted_stream_is_recorded_as_estimated(
    proxy: Running, kafka_bootstrap: str, topic_prefix: str
) -> None:
    # The SDKs surface a cut chunked body as their transport's protocol error.
    with pytest.raises(Exception, match=r"incomplete|closed|Connection") as cut:
        stream = await oai(proxy).chat.completions.create(
            model="cut-off",
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-fake-interrupt": "1"},
        )
        async for _ in stream:
            pass
    assert not isinstance(cut.value, AssertionError)
    with pytest.raises(Exception, match=r"incomplete|closed|Connection"):
        async with ant(proxy).messages.stream(
            model="claude-cut",
            max_tokens=100,
            messages=MESSAGES,
            extra_headers={"x-fake-interrupt": "1", "x-fake-usage": '{"input":77}'},
        ) as s:
            await s.get_final_message()
    events = {e.request_model: e for e in await read_usage(kafka_bootstrap, topic_prefix, 2)}
    assert events["cut-off"].usage_status == "estimated"
    assert events["cut-off"].input_total > 0 and events["cut-off"].output >= 1
    assert events["claude-cut"].usage_status == "estimated"
    assert events["claude-cut"].input_uncached == 77  # message_start's real count is kept


async def test_errors_keep_the_providers_shape(proxy: Running) -> None:
    with pytest.raises(openai.InternalServerError):
        await oai(proxy).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_headers={"x-fake-status": "500"}
        )
    with pytest.raises(anthropic.BadRequestError) as upstream_400:
        await ant(proxy).messages.create(
            model="c", max_tokens=5, messages=MESSAGES, extra_headers={"x-fake-status": "400"}
        )
    assert upstream_400.value.body["error"]["message"] == "fake upstream error"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError) as malformed:
        await oai(proxy).chat.completions.create(model="gpt-4o", messages=[])
    assert "messages" in str(malformed.value)
    async with httpx.AsyncClient(base_url=proxy.url) as http:
        response = await http.post(
            "/v1/messages", content=b"{not json", headers={"x-api-key": proxy.secret}
        )
        assert response.status_code == 400
        assert orjson.loads(response.content)["error"]["type"] == "invalid_request_error"

    unknown = openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await unknown.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(anthropic.AuthenticationError):
        await anthropic.AsyncAnthropic(
            base_url=proxy.url, api_key="nope", max_retries=0
        ).messages.create(model="c", max_tokens=5, messages=MESSAGES)


async def test_feature_and_tags_from_headers_and_metadata(
    proxy: Running, kafka_bootstrap: str, topic_prefix: str, fake: FakeProvider
) -> None:
    await oai(proxy).chat.completions.create(
        model="by-header",
        messages=MESSAGES,
        extra_headers={"x-allotment-feature": "search", "x-allotment-tags": "eu,prod"},
    )
    await oai(proxy).chat.completions.create(
        model="by-metadata",
        messages=MESSAGES,
        metadata={"allotment_feature": "summary", "allotment_tags": "beta"},
    )
    assert "metadata" not in fake.last().body
    events = {e.request_model: e for e in await read_usage(kafka_bootstrap, topic_prefix, 2)}
    assert (events["by-header"].feature, events["by-header"].tags) == ("search", ["eu", "prod"])
    assert (events["by-metadata"].feature, events["by-metadata"].tags) == ("summary", ["beta"])


async def test_fail_closed_refuses_until_policies_are_read(
    kafka_bootstrap: str, fake: FakeProvider, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    missing = f"missing-{tenant}"  # a prefix whose topics do not exist: never caught up
    async with running_proxy(
        kafka_bootstrap,
        missing,
        fake.url,
        tmp_path,
        tenant,
        wait_caught_up=False,
        fail_open=False,
        drain_timeout_s=0.5,
    ) as run:
        with pytest.raises(openai.APIStatusError) as caught:
            await oai(run).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert caught.value.status_code == 503
    async with running_proxy(
        kafka_bootstrap,
        missing,
        fake.url,
        tmp_path,
        tenant,
        wait_caught_up=False,
        drain_timeout_s=0.5,
    ) as run:
        raw = await oai(run).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        assert raw.headers["x-allotment-policy-state"] == "catching-up"


async def test_a_client_that_hangs_up_mid_stream_is_charged_an_estimate(
    proxy: Running, kafka_bootstrap: str, topic_prefix: str
) -> None:
    body = {"model": "hung-up", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {proxy.secret}", "x-fake-chunk-delay-ms": "300"}
    async with (
        httpx.AsyncClient(base_url=proxy.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            assert chunk.startswith(b"data: ")
            break  # hang up after the first chunk
    events = await read_usage(kafka_bootstrap, topic_prefix, 1)
    assert [(e.request_model, e.usage_status) for e in events] == [("hung-up", "estimated")]
    assert events[0].output >= 1


async def test_the_aiohttp_server_option_serves_the_same_app(
    kafka_bootstrap: str, topic_prefix: str, fake: FakeProvider, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    async with running_proxy(
        kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant, server="aiohttp"
    ) as run:
        raw = await oai(run).chat.completions.with_raw_response.create(
            model="via-aiohttp", messages=MESSAGES
        )
        assert raw.headers["x-allotment-policy"] == "allow"
        chunks = [
            c
            async for c in await oai(run).chat.completions.create(
                model="via-aiohttp-sse", messages=MESSAGES, stream=True
            )
        ]
        assert chunks and all(c.choices for c in chunks)
        async with ant(run).messages.stream(
            model="claude-aiohttp", max_tokens=30, messages=MESSAGES
        ) as stream:
            assert (await stream.get_final_message()).usage.output_tokens == 20
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(
                base_url=f"{run.url}/v1", api_key="wrong", max_retries=0
            ).chat.completions.create(model="x", messages=MESSAGES)
    events = await read_usage(kafka_bootstrap, topic_prefix, 3)
    assert sorted(e.request_model or "" for e in events) == [
        "claude-aiohttp",
        "via-aiohttp",
        "via-aiohttp-sse",
    ]


async def test_an_oversized_body_is_refused_with_413(
    kafka_bootstrap: str, topic_prefix: str, fake: FakeProvider, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    async with running_proxy(
        kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant, max_body_bytes=1000
    ) as run:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await ant(run).messages.create(
                model="c", max_tokens=5, messages=[{"role": "user", "content": "x" * 2000}]
            )
        assert caught.value.status_code == 413
        assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        assert fake.received == []
