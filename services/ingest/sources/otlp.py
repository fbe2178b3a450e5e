"""OTLP/HTTP traces (protobuf or JSON): usage from model-call spans.

Attributes read, first match wins (OpenTelemetry GenAI first, then the older OTel names, then
OpenInference / traceAI, which share the `llm.token_count.*` names):

    input      gen_ai.usage.input_tokens | gen_ai.usage.prompt_tokens | llm.token_count.prompt
    output     gen_ai.usage.output_tokens | gen_ai.usage.completion_tokens
               | llm.token_count.completion
    cache read gen_ai.usage.cache_read.input_tokens | gen_ai.usage.cache_read_input_tokens
               | llm.token_count.prompt_details.cache_read
    cache write gen_ai.usage.cache_creation.input_tokens
               | gen_ai.usage.cache_creation_input_tokens
               | llm.token_count.prompt_details.cache_write
    reasoning  gen_ai.usage.reasoning.output_tokens | llm.token_count.completion_details.reasoning

All of these conventions count cache reads and cache creation INSIDE the input total, and
reasoning inside the output; a span whose cache parts exceed its input is rejected rather than
guessed at. Provider: `gen_ai.provider.name` | `gen_ai.system` | `llm.provider` | `llm.system`;
models: `gen_ai.request.model` / `gen_ai.response.model` | `llm.model_name`.

Only model calls count. Agent, chain and tool spans may carry the sum of their children's usage
(`gen_ai.operation.name` invoke_agent / create_agent / execute_tool, OpenInference or traceAI
span kinds other than LLM and EMBEDDING) and are skipped, so nothing is counted twice. The
request id is `<trace id>/<span id>`: a re-exported span maps to the same event.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.attribution import flatten
from services.ingest.errors import BadPayload, RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time
from services.ingest.tokens import count, from_inclusive

SOURCE = "otel"

INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
OUTPUT = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "llm.token_count.completion_details.reasoning",
)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
AGGREGATE_OPERATIONS = {"invoke_agent", "create_agent", "execute_tool"}
MODEL_SPAN_KINDS = {"LLM", "EMBEDDING"}


def _any_value(value: Mapping[str, Any]) -> Any:
    """An OTLP JSON AnyValue as plain Python (int64 arrives as a decimal string)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _json_attributes(value["kvlistValue"].get("values", []))
    return None


def _json_attributes(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {
        str(kv.get("key")): _any_value(kv.get("value") or {})
        for kv in items
        if isinstance(kv, Mapping)
    }


def _hex_id(value: Any, size: int) -> str:
    """OTLP JSON ids are hex; some senders use protobuf-JSON base64 instead, also accepted."""
    text = str(value or "")
    if len(text) == size * 2 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.lower()
    return raw.hex() if len(raw) == size else text.lower()


def spans_from_json(body: bytes) -> list[dict[str, Any]]:
    """Flatten an OTLP JSON export into span dicts (ids as hex, times in ns)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"OTLP JSON body does not parse: {exc}") from None
    if not isinstance(document, Mapping):
        raise BadPayload("OTLP JSON body must be an object with resourceSpans")
    spans = []
    for r, rs in enumerate(document.get("resourceSpans") or []):
        resource = _json_attributes((rs.get("resource") or {}).get("attributes"))
        for s, ss in enumerate(rs.get("scopeSpans") or []):
            for i, span in enumerate(ss.get("spans") or []):
                spans.append(
                    {
                        "path": f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]",
                        "trace_id": str(span.get("traceId", "")).lower(),
                        "span_id": str(span.get("spanId", "")).lower(),
                        "name": span.get("name"),
                        "start_ns": int(span.get("startTimeUnixNano") or 0),
                        "attributes": _json_attributes(span.get("attributes")),
                        "resource": resource,
                    }
                )
    return spans


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_pb_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def spans_from_protobuf(body: bytes) -> list[dict[str, Any]]:
    """Flatten an OTLP protobuf ExportTraceServiceRequest into span dicts."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise BadPayload(f"OTLP protobuf body does not parse: {exc}") from None
    spans = []
    for r, rs in enumerate(request.resource_spans):
        resource = {kv.key: _pb_value(kv.value) for kv in rs.resource.attributes}
        for s, ss in enumerate(rs.scope_spans):
            for i, span in enumerate(ss.spans):
                spans.append(
                    {
                        "path": f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]",
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "name": span.name,
                        "start_ns": span.start_time_unix_nano,
                        "attributes": {kv.key: _pb_value(kv.value) for kv in span.attributes},
                        "resource": resource,
                    }
                )
    return spans


def _first(attrs: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        if attrs.get(name) is not None:
            return name, attrs[name]
    return names[0], None


def _is_model_call(attrs: Mapping[str, Any]) -> bool:
    if attrs.get("gen_ai.operation.name") in AGGREGATE_OPERATIONS:
        return False
    kind = attrs.get("openinference.span.kind") or attrs.get("fi.span.kind")
    return kind is None or str(kind).upper() in MODEL_SPAN_KINDS


def to_draft(span: Mapping[str, Any]) -> Draft | None:
    """A span's usage, or None when the span is not a model call with token counts."""
    attrs = {**span.get("resource", {}), **span.get("attributes", {})}
    in_name, in_value = _first(attrs, INPUT)
    out_name, out_value = _first(attrs, OUTPUT)
    if (in_value is None and out_value is None) or not _is_model_call(attrs):
        return None
    if not span.get("trace_id") or not span.get("span_id"):
        raise RecordRejected("spanId", "is required (with traceId) to identify the request")
    read_name, read_value = _first(attrs, CACHE_READ)
    write_name, write_value = _first(attrs, CACHE_WRITE)
    reason_name, reason_value = _first(attrs, REASONING)
    tokens = from_inclusive(
        count(in_value, in_name),
        count(read_value, read_name),
        count(write_value, write_name),
        count(out_value, out_name),
        count(reason_value, reason_name),
        input_field=in_name,
        output_field=out_name,
    )
    context: dict[str, Any] = {}
    flatten("attribute", span.get("resource"), context)
    flatten("attribute", span.get("attributes"), context)
    metadata = attrs.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            metadata = None
    flatten("metadata", metadata if isinstance(metadata, Mapping) else None, context)
    _, provider = _first(attrs, PROVIDER)
    return Draft(
        source=SOURCE,
        source_request_id=f"{span['trace_id']}/{span['span_id']}",
        occurred_at=parse_time(int(span.get("start_ns") or 0), "startTimeUnixNano")
        if span.get("start_ns")
        else None,
        tokens=tokens,
        provider=opt_str(provider),
        request_model=opt_str(attrs.get("gen_ai.request.model"))
        or opt_str(attrs.get("llm.model_name")),
        response_model=opt_str(attrs.get("gen_ai.response.model"))
        or opt_str(attrs.get("llm.model_name")),
        context=context,
        defaults={
            "user": attrs.get("user.id") or attrs.get("enduser.id"),
            "tags": attrs.get("tag.tags"),
        },
    )
