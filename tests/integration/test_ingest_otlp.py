"""OTLP/HTTP from the real opentelemetry-sdk: the protobuf exporter (gzip), and the spans as JSON.

The Python SDK ships no OTLP JSON exporter that fits the installed SDK version, so the JSON
body is the SDK's own protobuf encoding of the same spans rendered in OTLP JSON (hex ids,
int64 as strings), as the JSON exporters of other SDKs send it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx
from fakes.kafka_io import read_usage_by_partition
from google.protobuf.json_format import MessageToDict
from ingest_support import kafka_sink, key_ring, serve
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.ingest.keys import hash_key
from services.ingest.sources.base import scoped_event_id

KEY = "otel-ingest-key"


def _spans(with_bad_span: bool) -> Sequence[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "copilot"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.usage.input_tokens", 99_999)
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o")
            span.set_attribute("gen_ai.response.model", "gpt-4o-2024-08-06")
            span.set_attribute("gen_ai.usage.input_tokens", 1200)
            span.set_attribute("gen_ai.usage.output_tokens", 80)
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", 1000)
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", 150)
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", 50)
            span.set_attribute("user.id", "u-42")
        with tracer.start_as_current_span("ChatCompletion") as span:
            span.set_attribute("openinference.span.kind", "LLM")
            span.set_attribute("llm.provider", "anthropic")
            span.set_attribute("llm.model_name", "claude-sonnet-4")
            span.set_attribute("llm.token_count.prompt", 412)
            span.set_attribute("llm.token_count.completion", 27)
            span.set_attribute("llm.token_count.prompt_details.cache_read", 256)
            span.set_attribute("llm.token_count.prompt_details.cache_write", 6)
            span.set_attribute("tag.tags", ["beta"])
        with tracer.start_as_current_span("GET /health") as span:
            span.set_attribute("http.request.method", "GET")
        if with_bad_span:
            with tracer.start_as_current_span("chat broken") as span:
                span.set_attribute("gen_ai.usage.input_tokens", 5)
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", 9)
    provider.shutdown()
    return memory.get_finished_spans()


def _otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    document = MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return document


async def test_real_sdk_exports_protobuf_and_json_and_only_model_calls_count(
    kafka_bootstrap, topic_prefix
):
    keys = key_ring(
        {
            "id": "otel",
            "tenant": "acme",
            "key_sha256": hash_key(KEY),
            "attribution": {"feature": ["service.name"]},
        }
    )
    spans = _spans(with_bad_span=True)
    good_spans = [s for s in spans if s.name != "chat broken"]
    with serve(keys, kafka_sink(kafka_bootstrap, topic_prefix)) as url:
        exporter = OTLPSpanExporter(
            endpoint=f"{url}/v1/traces",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
            compression=Compression.Gzip,
        )
        try:
            assert exporter.export(good_spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        refused = OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", headers={"Authorization": "Bearer wrong"}, timeout=30
        )
        try:
            assert refused.export(good_spans) == SpanExportResult.FAILURE
        finally:
            refused.shutdown()
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.post(
                "/v1/traces",
                json=_otlp_json(spans),
                headers={"Authorization": f"Bearer {KEY}"},
            )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "gen_ai.usage.input_tokens: must include its cache parts" in partial["errorMessage"]

    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=4)
    assert len(on_topic) == 4  # two model calls, exported twice: same ids both times
    by_id: dict[str, list[Any]] = {}
    for _, event in on_topic:
        by_id.setdefault(event.event_id, []).append(event)
    chat = next(s for s in spans if s.name == "chat gpt-4o")
    request_id = f"{chat.context.trace_id:032x}/{chat.context.span_id:016x}"
    gen_ai = by_id[scoped_event_id("otel", "acme", request_id)]
    assert len(gen_ai) == 2
    event = gen_ai[0]
    assert (
        event.input_uncached,
        event.cache_read,
        event.cache_write,
        event.output,
        event.reasoning,
    ) == (50, 1000, 150, 80, 50)
    assert (event.provider, event.request_model, event.response_model) == (
        "openai",
        "gpt-4o",
        "gpt-4o-2024-08-06",
    )
    assert (event.feature, event.user, event.tenant) == ("copilot", "u-42", "acme")
    openinference = [e for events in by_id.values() for e in events if e.provider == "anthropic"]
    assert len(openinference) == 2
    assert (
        openinference[0].input_uncached,
        openinference[0].cache_read,
        openinference[0].cache_write,
        openinference[0].output,
    ) == (150, 256, 6, 27)
    assert openinference[0].tags == ["beta"]
