"""Spans that only sum their children's usage are not counted again; model calls still are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.ingest.batch import map_records
from services.ingest.keys import IngestKey, hash_key
from services.ingest.sources import otlp

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = IngestKey("k1", "acme", hash_key("secret"))
TRACE = "5b8efff798038103d269b633813fc60c"


def _span(span_id: int, parent: int | None, **attrs: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": f"{span_id:016x}",
        "startTimeUnixNano": "1764237600000000000",
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in attrs.items()
        ],
    }
    if parent is not None:
        span["parentSpanId"] = f"{parent:016x}"
    return span


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens}


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
}
# pydantic-ai's "agent run" span before it set gen_ai.operation.name: the run's summed usage,
# its model under a name that is not a model-call attribute.
AGENT_RUN = {"model_name": "gpt-4o", "agent_name": "support", "logfire.msg": "support run"}


def _json(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]})


def _protobuf(*spans: dict[str, Any]) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in spans:
        message = scope.spans.add()
        message.trace_id = bytes.fromhex(span["traceId"])
        message.span_id = bytes.fromhex(span["spanId"])
        if "parentSpanId" in span:
            message.parent_span_id = bytes.fromhex(span["parentSpanId"])
        for kv in span["attributes"]:
            attribute = message.attributes.add()
            attribute.key = kv["key"]
            if "intValue" in kv["value"]:
                attribute.value.int_value = int(kv["value"]["intValue"])
            else:
                attribute.value.string_value = kv["value"]["stringValue"]
    return request.SerializeToString()


def _counted(spans: list[dict[str, Any]]) -> list[tuple[str, int]]:
    batch = map_records(spans, otlp.to_draft, KEY, NOW)
    assert not batch.rejected
    return sorted((e.source_request_id[-2:], e.input_uncached + e.output) for e in batch.events)


RUN = (
    _span(1, None, **AGENT_RUN, **_usage(3000, 400)),
    _span(2, 1, **CHAT, **_usage(1000, 150)),
    _span(3, 1, **CHAT, **_usage(2000, 250)),
)


def test_an_agent_run_span_summing_its_model_calls_is_not_counted_again():
    assert _counted(otlp.spans_from_json(_json(*RUN))) == [("02", 1150), ("03", 2250)]
    assert _counted(otlp.spans_from_protobuf(_protobuf(*RUN))) == [("02", 1150), ("03", 2250)]


def test_usage_two_levels_below_makes_an_aggregate_too():
    spans = (
        _span(1, None, **_usage(1000, 150)),  # a workflow total
        _span(2, 1, **{"gen_ai.operation.name": "execute_tool"}),  # no usage of its own
        _span(3, 2, **CHAT, **_usage(1000, 150)),
    )
    assert _counted(otlp.spans_from_json(_json(*spans))) == [("03", 1150)]


def test_a_model_call_without_model_attributes_still_counts_alone():
    spans = (
        _span(1, None, **_usage(500, 50)),  # no identity, nothing with usage below
        _span(2, 1, **{"http.method": "POST"}),
        _span(3, 99, **_usage(70, 7)),  # its parent is not in this export
    )
    assert _counted(otlp.spans_from_json(_json(*spans))) == [("01", 550), ("03", 77)]


def test_a_span_that_names_its_model_is_a_model_call_even_with_usage_below():
    spans = (
        _span(1, None, **{"llm.model_name": "gpt-4o"}, **_usage(1000, 150)),
        _span(2, 1, **{"gen_ai.request.model": "gpt-4o"}, **_usage(1000, 150)),
    )
    assert _counted(otlp.spans_from_json(_json(*spans))) == [("01", 1150), ("02", 1150)]


# Review 3B, finding 3: the run span ends after its model calls, so the SDK's BatchSpanProcessor
# (5 s schedule) sends it in a later export than they go in whenever a run takes longer.
PYDANTIC_AI_RUNS = {
    "before gen_ai.agent.name": AGENT_RUN,
    "with gen_ai.agent.name": {**AGENT_RUN, "gen_ai.agent.name": "support"},
    "with invoke_agent": {
        **AGENT_RUN,
        "gen_ai.agent.name": "support",
        "gen_ai.operation.name": "invoke_agent",
    },
}


def test_an_agent_run_exported_after_its_model_calls_is_not_counted_again():
    for label, attributes in PYDANTIC_AI_RUNS.items():
        run = _span(1, None, **attributes, **_usage(3000, 400))
        calls = _counted(otlp.spans_from_json(_json(RUN[1], RUN[2])))
        later = _counted(otlp.spans_from_protobuf(_protobuf(run)))
        assert (calls, later) == ([("02", 1150), ("03", 2250)], []), label
        earlier = _counted(otlp.spans_from_json(_json(run)))  # or before them: no other span
        assert earlier == [], label


# pydantic-ai's model-request span (models/instrumented.py), with the agent name Logfire copies
# from baggage onto every span of the run; OpenInference's LLM span from the OpenAI Agents SDK.
PYDANTIC_AI_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.agent.name": "support",
}
OPENINFERENCE_LLM = {
    "openinference.span.kind": "LLM",
    "llm.system": "openai",
    "llm.model_name": "gpt-4o",
    "gen_ai.agent.name": "support",
    "llm.token_count.prompt": 900,
    "llm.token_count.completion": 90,
}


def test_model_calls_that_carry_an_agent_name_still_count():
    spans = (
        _span(2, 1, **PYDANTIC_AI_CHAT, **_usage(1000, 150)),
        _span(3, 1, **OPENINFERENCE_LLM),
        # says it is a model call without naming the model
        _span(4, 1, **{"gen_ai.operation.name": "chat", "agent_name": "x"}, **_usage(10, 1)),
        _span(
            5, 1, **{"openinference.span.kind": "LLM", "gen_ai.agent.name": "x"}, **_usage(20, 2)
        ),
    )
    expected = [("02", 1150), ("03", 990), ("04", 11), ("05", 22)]
    assert _counted(otlp.spans_from_json(_json(*spans))) == expected
    assert _counted(otlp.spans_from_protobuf(_protobuf(*spans))) == expected


def test_an_agent_name_on_the_resource_does_not_make_a_model_call_an_aggregate():
    body = orjson.loads(_json(_span(2, None, **_usage(500, 50))))
    body["resourceSpans"][0]["resource"] = {
        "attributes": [{"key": "gen_ai.agent.name", "value": {"stringValue": "support"}}]
    }
    assert _counted(otlp.spans_from_json(orjson.dumps(body))) == [("02", 550)]
