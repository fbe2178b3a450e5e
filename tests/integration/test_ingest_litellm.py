"""LiteLLM's real StandardLoggingPayload (custom callback, mocked completion, no network) ingested.

The payloads are produced by the installed `litellm` package: a `CustomLogger` captures
`kwargs["standard_logging_object"]` from `acompletion(..., mock_response=...)`. They are then
posted the way LiteLLM's generic API logger posts them (a JSON array, or NDJSON).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx
import orjson
from fakes.kafka_io import read_usage_by_partition
from ingest_support import kafka_sink, key_ring, serve

from services.ingest.keys import hash_key
from services.ingest.sources.base import scoped_event_id

KEY = "litellm-ingest-key"


async def _payloads() -> list[dict[str, Any]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
    from litellm.types.utils import ModelResponse, Usage

    captured: list[dict[str, Any]] = []

    class Capture(CustomLogger):
        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            captured.append(kwargs["standard_logging_object"])

    def mock(model: str, usage: Usage) -> ModelResponse:
        choice = {"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        return ModelResponse(model=model, choices=[{**choice, "index": 0}], usage=usage)

    previous = litellm.callbacks
    litellm.callbacks = [Capture()]
    try:
        await litellm.acompletion(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            mock_response=mock(
                "gpt-4o-2024-08-06",
                Usage(
                    prompt_tokens=1000,
                    completion_tokens=40,
                    total_tokens=1040,
                    prompt_tokens_details={"cached_tokens": 600},
                    completion_tokens_details={"reasoning_tokens": 12},
                ),
            ),
            metadata={
                "user_api_key_team_alias": "support",
                "user_api_key_alias": "support-bot",
                "spend_logs_metadata": {"feature": "copilot"},
                "tags": ["prod"],
            },
        )
        await litellm.acompletion(
            model="anthropic/claude-sonnet-4-20250514",
            messages=[{"role": "user", "content": "hi"}],
            mock_response=mock(
                "claude-sonnet-4-20250514",
                Usage(
                    prompt_tokens=1150,
                    completion_tokens=40,
                    total_tokens=1190,
                    cache_read_input_tokens=1000,
                    cache_creation_input_tokens=100,
                ),
            ),
        )
        for _ in range(200):
            if len(captured) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        litellm.callbacks = previous
    assert len(captured) == 2, "litellm did not call the callback twice"
    # The generic logger serialises the payload as JSON; do the same (datetimes become text).
    return [orjson.loads(orjson.dumps(p, default=str)) for p in captured]


async def test_litellm_payloads_from_the_real_package_are_normalised_exactly(
    kafka_bootstrap, topic_prefix
):
    openai_call, anthropic_call = await _payloads()
    keys = key_ring(
        {
            "id": "ll",
            "tenant": "acme",
            "key_sha256": hash_key(KEY),
            "attribution": {"feature": ["metadata.spend_logs_metadata.feature"]},
        }
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    with serve(keys, kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            first = await client.post(
                "/v1/ingest/litellm", json=[openai_call, anthropic_call], headers=headers
            )
            ndjson = b"\n".join(orjson.dumps(p) for p in (openai_call, anthropic_call))
            again = await client.post(
                "/v1/ingest/litellm",
                content=ndjson,
                headers={**headers, "Content-Type": "application/x-ndjson"},
            )
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    ids = first.json()["event_ids"]
    assert ids == again.json()["event_ids"]
    assert ids == [
        scoped_event_id("litellm", "acme", p["id"]) for p in (openai_call, anthropic_call)
    ]

    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=4)
    assert len(on_topic) == 4
    events = {e.event_id: e for _, e in on_topic}
    openai_event, anthropic_event = events[ids[0]], events[ids[1]]
    # OpenAI via LiteLLM: 1000 prompt tokens of which 600 cached; 12 of 40 output are reasoning.
    assert (
        openai_event.input_uncached,
        openai_event.cache_read,
        openai_event.cache_write,
        openai_event.output,
        openai_event.reasoning,
    ) == (400, 600, 0, 40, 12)
    assert (openai_event.team, openai_event.virtual_key, openai_event.feature) == (
        "support",
        "support-bot",
        "copilot",
    )
    assert openai_event.tags == ["prod"]
    assert openai_event.response_model == "gpt-4o-2024-08-06"
    assert openai_event.cost_micros and openai_event.cost_micros > 0
    # Anthropic via LiteLLM: prompt_tokens 1150 = 50 uncached + 1000 read + 100 written.
    assert (
        anthropic_event.input_uncached,
        anthropic_event.cache_read,
        anthropic_event.cache_write,
        anthropic_event.input_total,
        anthropic_event.output,
    ) == (50, 1000, 100, 1150, 40)
    assert anthropic_event.provider == "anthropic"


async def test_litellm_generic_api_logger_posts_straight_to_the_endpoint(
    kafka_bootstrap, topic_prefix
):
    """LiteLLM's own generic API logger (not a hand-made POST) delivers to /v1/ingest/litellm."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    keys = key_ring({"id": "ll", "tenant": "acme", "key_sha256": hash_key(KEY)})
    previous = litellm.callbacks
    with serve(keys, kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        logger = GenericAPILogger(
            endpoint=f"{url}/v1/ingest/litellm",
            headers={"Authorization": f"Bearer {KEY}"},
            log_format="ndjson",
            batch_size=1000,
        )
        litellm.callbacks = [logger]
        try:
            responses = [
                await litellm.acompletion(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"hi {i}"}],
                    mock_response=f"hello {i}",
                )
                for i in range(3)
            ]
            for _ in range(200):
                if len(logger.log_queue) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(logger.log_queue) == 3
            await logger.flush_queue()
            assert logger.log_queue == []  # delivered: the logger keeps what it failed to send
        finally:
            litellm.callbacks = previous
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=3)
    ids = {e.source_request_id for _, e in on_topic}
    assert ids == {r.id for r in responses}
    assert all((e.source, e.tenant, e.output) == ("litellm", "acme", 20) for _, e in on_topic)
