"""Table-driven: each source's record maps onto exactly the expected `UsageRecorded` parts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.ingest.attribution import AttributionMap
from services.ingest.errors import RecordRejected
from services.ingest.keys import IngestKey, hash_key
from services.ingest.sources import (
    anthropic,
    bifrost,
    helicone,
    litellm,
    native,
    openai,
    otlp,
    portkey,
)
from services.ingest.sources.base import build_event, scoped_event_id

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = IngestKey("k1", "acme", hash_key("secret"))


def parts(event: Any) -> tuple[int, int, int, int, int]:
    return (
        event.input_uncached,
        event.cache_read,
        event.cache_write,
        event.output,
        event.reasoning,
    )


def mapped(to_draft: Any, record: Any, key: IngestKey = KEY) -> Any:
    draft = to_draft(record)
    assert draft is not None
    return build_event(draft, key, NOW)


NATIVE_CASES = [
    (
        {
            "source_request_id": "r1",
            "occurred_at": "2026-11-27T10:00:00Z",
            "input_uncached": 5,
            "cache_read": 3,
            "output": 7,
            "reasoning": 2,
            "team": "core",
            "tags": ["a"],
        },
        (5, 3, 0, 7, 2),
        {"team": "core", "tags": ["a"]},
    ),
    (
        {
            "source": "my-proxy",
            "source_request_id": "r2",
            "occurred_at": "2026-11-27T10:00:00+01:00",
            "cache_write": 9,
            "tenant": "acme",
            "input_total": 9,
            "total": 9,
        },
        (0, 0, 9, 0, 0),
        {},
    ),
]


@pytest.mark.parametrize(("record", "expected", "attribution"), NATIVE_CASES)
def test_native(record, expected, attribution):
    event = mapped(native.to_draft, record)
    assert parts(event) == expected
    assert event.tenant == "acme"
    source = record.get("source", "native")
    assert event.event_id == scoped_event_id(source, "acme", record["source_request_id"])
    for field, value in attribution.items():
        assert getattr(event, field) == value


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"occurred_at": "2026-11-27T10:00:00Z"}, "source_request_id"),
        ({"source_request_id": "r", "occurred_at": "2026-11-27T10:00:00"}, "occurred_at"),
        (
            {"source_request_id": "r", "occurred_at": "2026-11-27T10:00:00Z", "tenant": "other"},
            "tenant",
        ),
        ({"source_request_id": "r", "occurred_at": "2026-11-27T10:00:00Z", "outptu": 1}, "outptu"),
        ({"source_request_id": "r", "occurred_at": "2026-11-27T10:00:00Z", "output": -4}, "output"),
        (
            {
                "source_request_id": "r",
                "occurred_at": "2026-11-27T10:00:00Z",
                "output": 1,
                "reasoning": 2,
            },
            "reasoning",
        ),
        (
            {
                "source_request_id": "r",
                "occurred_at": "2026-11-27T10:00:00Z",
                "output": 1,
                "total": 5,
            },
            "total",
        ),
    ],
)
def test_native_rejections_name_the_field(record, field):
    with pytest.raises(RecordRejected) as err:
        mapped(native.to_draft, record)
    assert err.value.field == field


def _slp(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": "call-1",
        "call_type": "acompletion",
        "startTime": 1795780800.5,
        "endTime": 1795780801.0,
        "model": "gpt-4o",
        "model_group": "gpt-4o",
        "custom_llm_provider": "openai",
        "prompt_tokens": 1000,
        "completion_tokens": 40,
        "total_tokens": 1040,
        "response_cost": 0.0125,
        "status": "success",
        "cache_hit": None,
        "request_tags": ["prod"],
        "end_user": "u-9",
        "metadata": {
            "user_api_key_team_alias": "support",
            "user_api_key_alias": "support-bot",
            "requester_metadata": {"feature": "copilot"},
            "usage_object": {
                "prompt_tokens": 1000,
                "completion_tokens": 40,
                "prompt_tokens_details": {"cached_tokens": 600},
            },
        },
        "response": {"model": "gpt-4o-2024-08-06"},
    }
    record.update(overrides)
    return record


LITELLM_CASES = [
    (_slp(), (400, 600, 0, 40, 0)),
    (
        _slp(
            prompt_tokens=1150,
            metadata={
                "usage_object": {
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 100,
                    "prompt_tokens_details": {"cached_tokens": 1000},
                }
            },
        ),
        (50, 1000, 100, 40, 0),
    ),
    (
        _slp(metadata={"usage_object": {"completion_tokens_details": {"reasoning_tokens": 30}}}),
        (1000, 0, 0, 40, 30),
    ),
    (_slp(cache_hit=True), (0, 0, 0, 0, 0)),
]


@pytest.mark.parametrize(("record", "expected"), LITELLM_CASES)
def test_litellm(record, expected):
    event = mapped(litellm.to_draft, record)
    assert parts(event) == expected
    assert event.event_id == scoped_event_id("litellm", "acme", "call-1")
    assert event.occurred_at == datetime.fromtimestamp(1795780800.5, UTC)


def test_litellm_defaults_and_configured_attribution():
    event = mapped(litellm.to_draft, _slp())
    assert (event.team, event.user, event.virtual_key, event.tags) == (
        "support",
        "u-9",
        "support-bot",
        ["prod"],
    )
    assert event.cost_micros == 12_500
    assert event.response_model == "gpt-4o-2024-08-06"
    key = IngestKey(
        "k2",
        "acme",
        hash_key("x"),
        AttributionMap(
            feature=("metadata.requester_metadata.feature",),
            team=("metadata.nothing", "litellm.model"),
        ),
    )
    event = mapped(litellm.to_draft, _slp(), key)
    assert event.feature == "copilot"
    assert event.team == "gpt-4o"


def test_litellm_cache_parts_larger_than_prompt_are_rejected():
    record = _slp(prompt_tokens=10)
    with pytest.raises(RecordRejected) as err:
        mapped(litellm.to_draft, record)
    assert err.value.field == "prompt_tokens"


HELICONE_CASES = [
    (  # webhook with an OpenAI response body: exact parts from the provider usage
        {
            "request_id": "h1",
            "model": "gpt-4o",
            "provider": "OPENAI",
            "response_body": '{"usage": {"prompt_tokens": 100, "completion_tokens": 10, '
            '"prompt_tokens_details": {"cached_tokens": 64}}}',
            "metadata": {"cost": 0.001, "promptTokens": 36, "completionTokens": 10},
        },
        (36, 64, 0, 10, 0),
    ),
    (  # webhook with an Anthropic body
        {
            "request_id": "h2",
            "response_body": '{"usage": {"input_tokens": 5, '
            '"cache_creation_input_tokens": 70, "output_tokens": 9}}',
        },
        (5, 0, 70, 9, 0),
    ),
    (  # truncated body: Helicone's own counts (promptTokens already excludes the cache)
        {
            "request_id": "h3",
            "response_body": "Body too large for webhook",
            "metadata": {"promptTokens": 36, "completionTokens": 10},
        },
        (36, 0, 0, 10, 0),
    ),
    (  # export row: disjoint columns
        {
            "request_id": "h4",
            "request_created_at": "2026-11-20T08:00:00.000Z",
            "prompt_tokens": 20,
            "prompt_cache_read_tokens": 300,
            "prompt_cache_write_tokens": 7,
            "completion_tokens": 4,
            "properties": {"Feature": "search"},
            "costUSD": 0.5,
        },
        (20, 300, 7, 4, 0),
    ),
]


@pytest.mark.parametrize(("record", "expected"), HELICONE_CASES)
def test_helicone(record, expected):
    event = mapped(helicone.to_draft, record)
    assert parts(event) == expected
    assert event.event_id == scoped_event_id("helicone", "acme", record["request_id"])


def test_helicone_property_maps_to_feature_and_webhook_time_is_arrival():
    key = IngestKey(
        "k3", "acme", hash_key("x"), AttributionMap(feature=("Helicone-Property-Feature",))
    )
    event = mapped(helicone.to_draft, HELICONE_CASES[3][0], key)
    assert event.feature == "search"
    assert event.occurred_at == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert event.cost_micros == 500_000
    assert mapped(helicone.to_draft, HELICONE_CASES[0][0]).occurred_at == NOW


PORTKEY_CASES = [
    (
        {
            "id": "p1",
            "created_at": "2026-11-26 09:30:00",
            "ai_org": "openai",
            "ai_model": "gpt-4o",
            "req_units": 120,
            "res_units": 30,
            "cost": 0.5,
            "metadata": {"_user": "ana", "team": "ml"},
            "response": {
                "body": {
                    "model": "gpt-4o-2024",
                    "usage": {
                        "prompt_tokens": 120,
                        "completion_tokens": 30,
                        "prompt_tokens_details": {"cached_tokens": 100},
                    },
                }
            },
        },
        (20, 100, 0, 30, 0),
    ),
    (
        {
            "id": "p2",
            "created_at": "2026-11-26T09:30:00Z",
            "ai_org": "anthropic",
            "response.body": '{"usage": {"input_tokens": 3, "cache_read_input_tokens": 50, '
            '"output_tokens": 2}}',
        },
        (3, 50, 0, 2, 0),
    ),
    (
        {"id": "p3", "created_at": "2026-11-26T09:30:00Z", "req_units": 8, "res_units": 2},
        (8, 0, 0, 2, 0),
    ),
    # A /chat/completions call to Claude as Portkey logs it: its Anthropic transform answers
    # OpenAI-shaped usage, prompt_tokens WITHOUT the cache parts, which stay top-level.
    (
        {
            "id": "p4",
            "created_at": "2026-11-26T09:30:00Z",
            "ai_org": "anthropic",
            "ai_model": "claude-sonnet-4-5",
            "is_success": 1,
            "req_units": 7000,
            "res_units": 300,
            "total_units": 7300,
            "cost": 0.58,
            "cost_currency": "USD",
            "response.body": orjson.dumps(
                {
                    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                    "object": "chat.completion",
                    "model": "claude-sonnet-4-5-20250929",
                    "provider": "anthropic",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {
                        "prompt_tokens": 1200,
                        "completion_tokens": 300,
                        "total_tokens": 7300,
                        "cache_read_input_tokens": 5000,
                        "cache_creation_input_tokens": 800,
                    },
                }
            ).decode(),
        },
        (1200, 5000, 800, 300, 0),
    ),
    # Without cache use the transform leaves the cache keys out.
    (
        {
            "id": "p5",
            "created_at": "2026-11-26T09:30:00Z",
            "ai_org": "anthropic",
            "response": {
                "body": {"usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}}
            },
        },
        (40, 0, 0, 9, 0),
    ),
    # Claude over Bedrock: Portkey's Bedrock transform puts both cache parts INSIDE
    # prompt_tokens, the read also in prompt_tokens_details.
    (
        {
            "id": "p6",
            "created_at": "2026-11-26T09:30:00Z",
            "ai_org": "bedrock",
            "response": {
                "body": {
                    "usage": {
                        "prompt_tokens": 7000,
                        "completion_tokens": 300,
                        "total_tokens": 7300,
                        "prompt_tokens_details": {"cached_tokens": 5000},
                        "cache_read_input_tokens": 5000,
                        "cache_creation_input_tokens": 800,
                    }
                }
            },
        },
        (1200, 5000, 800, 300, 0),
    ),
]


@pytest.mark.parametrize(("record", "expected"), PORTKEY_CASES)
def test_portkey(record, expected):
    event = mapped(portkey.to_draft, record)
    assert parts(event) == expected


def test_portkey_cost_is_in_cents_and_user_from_metadata():
    event = mapped(portkey.to_draft, PORTKEY_CASES[0][0])
    assert event.cost_micros == 5_000
    assert event.user == "ana"
    assert event.response_model == "gpt-4o-2024"


BIFROST_CASES = [
    (
        {
            "id": "b1",
            "timestamp": "2026-11-26T09:30:00Z",
            "provider": "openai",
            "model": "gpt-4o",
            "status": "success",
            "cost": 0.002,
            "team_name": "search",
            "virtual_key_name": "vk-search",
            "token_usage": {
                "prompt_tokens": 500,
                "completion_tokens": 60,
                "total_tokens": 560,
                "prompt_tokens_details": {"cached_read_tokens": 256, "cached_write_tokens": 44},
                "completion_tokens_details": {"reasoning_tokens": 20},
            },
        },
        (200, 256, 44, 60, 20),
    ),
    (
        {
            "id": "b2",
            "timestamp": "2026-11-26T09:30:00Z",
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "cached_read_tokens": 4,
        },
        (6, 4, 0, 3, 0),
    ),
]


@pytest.mark.parametrize(("record", "expected"), BIFROST_CASES)
def test_bifrost(record, expected):
    event = mapped(bifrost.to_draft, record)
    assert parts(event) == expected


def test_bifrost_processing_log_is_rejected_and_defaults_apply():
    with pytest.raises(RecordRejected) as err:
        mapped(bifrost.to_draft, {**BIFROST_CASES[1][0], "status": "processing"})
    assert err.value.field == "status"
    event = mapped(bifrost.to_draft, BIFROST_CASES[0][0])
    assert (event.team, event.virtual_key) == ("search", "vk-search")


RAW_CASES = [
    (
        openai.to_draft,
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1795780800,
            "model": "gpt-4o",
            "feature": "summarise",
            "usage": {
                "prompt_tokens": 2006,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1920},
            },
        },
        (86, 1920, 0, 300, 0),
    ),
    (
        openai.to_draft,
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1795780800,
            "model": "o4-mini",
            "usage": {
                "input_tokens": 100,
                "output_tokens": 500,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 448},
            },
        },
        (100, 0, 0, 500, 448),
    ),
    (
        anthropic.to_draft,
        {
            "id": "msg_1",
            "model": "claude-sonnet-4",
            "occurred_at": "2026-11-27T09:00:00Z",
            "usage": {
                "input_tokens": 12,
                "cache_read_input_tokens": 4000,
                "cache_creation_input_tokens": 0,
                "output_tokens": 80,
            },
        },
        (12, 4000, 0, 80, 0),
    ),
]


@pytest.mark.parametrize(("to_draft", "record", "expected"), RAW_CASES)
def test_raw_provider_usage(to_draft, record, expected):
    event = mapped(to_draft, record)
    assert parts(event) == expected
    assert event.event_id == scoped_event_id(event.source, "acme", record["id"])


def _span(attrs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "path": "s",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "name": "chat",
        "start_ns": 1795780800_000_000_000,
        "attributes": attrs,
        "resource": {},
        **extra,
    }


OTLP_CASES = [
    (
        {
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 150,
            "gen_ai.usage.reasoning.output_tokens": 50,
            "gen_ai.provider.name": "anthropic",
        },
        (50, 1000, 150, 80, 50),
    ),
    (
        {
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 5,
            "gen_ai.system": "openai",
        },
        (10, 0, 0, 5, 0),
    ),
    (
        {
            "llm.token_count.prompt": 412,
            "llm.token_count.completion": 27,
            "llm.token_count.prompt_details.cache_read": 256,
            "llm.token_count.prompt_details.cache_write": 6,
            "llm.token_count.completion_details.reasoning": 7,
            "openinference.span.kind": "LLM",
        },
        (150, 256, 6, 27, 7),
    ),
    (
        {"llm.token_count.prompt": "40", "llm.token_count.completion": "2", "fi.span.kind": "LLM"},
        (40, 0, 0, 2, 0),
    ),
]


@pytest.mark.parametrize(("attrs", "expected"), OTLP_CASES)
def test_otlp_spans(attrs, expected):
    event = mapped(otlp.to_draft, _span(attrs))
    assert parts(event) == expected
    assert event.source_request_id == f"{'ab' * 16}/{'cd' * 8}"


@pytest.mark.parametrize(
    "attrs",
    [
        {"http.method": "POST"},
        {"gen_ai.usage.input_tokens": 10, "gen_ai.operation.name": "invoke_agent"},
        {"llm.token_count.prompt": 10, "openinference.span.kind": "CHAIN"},
        {"llm.token_count.prompt": 10, "fi.span.kind": "AGENT"},
    ],
)
def test_otlp_spans_without_model_usage_are_skipped(attrs):
    assert otlp.to_draft(_span(attrs)) is None


def test_otlp_inconsistent_cache_is_rejected_and_attribution_reads_attributes():
    with pytest.raises(RecordRejected) as err:
        otlp.to_draft(
            _span({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.cache_read.input_tokens": 9})
        )
    assert err.value.field == "gen_ai.usage.input_tokens"
    key = IngestKey(
        "k4",
        "acme",
        hash_key("x"),
        AttributionMap(feature=("service.name",), team=("metadata.team",)),
    )
    span = _span(
        {
            "gen_ai.usage.input_tokens": 5,
            "user.id": "u1",
            "tag.tags": ["x", "y"],
            "metadata": '{"team": "growth"}',
        },
        resource={"service.name": "copilot"},
    )
    event = mapped(otlp.to_draft, span, key)
    assert (event.feature, event.team, event.user, event.tags) == (
        "copilot",
        "growth",
        "u1",
        ["x", "y"],
    )


def test_the_same_request_id_from_two_tenants_never_collides():
    record = NATIVE_CASES[0][0]
    other_tenant = IngestKey("k9", "globex", hash_key("y"))
    first = mapped(native.to_draft, record)
    assert mapped(native.to_draft, record, other_tenant).event_id != first.event_id
    assert mapped(native.to_draft, record).event_id == first.event_id
    given_id = {**record, "event_id": "proxy-123"}
    del given_id["source_request_id"]
    assert mapped(native.to_draft, given_id).event_id == scoped_event_id(
        "native", "acme", "proxy-123"
    )


def test_portkey_request_id_falls_back_when_the_export_has_no_id():
    base = {k: v for k, v in PORTKEY_CASES[2][0].items() if k != "id"}
    with_response = {
        **base,
        "response": {"body": {"id": "chatcmpl-9", "usage": {"prompt_tokens": 1}}},
    }
    assert portkey.to_draft(with_response).source_request_id == "response:chatcmpl-9"
    with_span = {**base, "trace_id": "t1", "span_id": "s1"}
    assert portkey.to_draft(with_span).source_request_id == "span:t1/s1"
    digest = portkey.to_draft(base).source_request_id
    assert digest.startswith("sha256:")
    assert portkey.to_draft(dict(reversed(list(base.items())))).source_request_id == digest
    assert portkey.to_draft({**base, "res_units": 3}).source_request_id != digest


def test_a_litellm_cache_hit_reads_the_same_live_and_from_spendlogs():
    from services.ingest.sources import litellm_spendlogs

    live = mapped(litellm.to_draft, _slp(cache_hit=True))
    row = {
        "request_id": "call-1",
        "startTime": "2026-11-27 12:00:00.5",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 40,
        "cache_hit": "True",
        "metadata": '{"additional_usage_values": {"cache_read_input_tokens": 600}}',
    }
    backfilled = mapped(litellm_spendlogs.to_draft, row)
    assert parts(live) == parts(backfilled) == (0, 0, 0, 0, 0)
    assert live.event_id == backfilled.event_id
    assert (
        live.properties["gateway_cache_hit"] is backfilled.properties["gateway_cache_hit"] is True
    )
    cached = {"input_uncached": 400, "cache_read": 600, "cache_write": 0, "output": 40}
    for event in (live, backfilled):
        assert event.properties["cached_response_tokens"] == {**cached, "reasoning": 0}
