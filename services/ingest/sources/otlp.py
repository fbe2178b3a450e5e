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
request id is `<trace id>/<span id>` in lower-case hex (OTLP/JSON's hex ids as sent, base64 ids
from protobuf's own JSON mapping decoded): a re-exported span maps to the same event, over
protobuf or JSON.
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


class _Malformed(Exception):
    """A part of an OTLP JSON export that breaks the encoding; `field` is its path."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


_INT64_DIGITS = 19


def _int64(value: Any, field: str) -> int:
    """An OTLP JSON int64/fixed64: a JSON number or a decimal string (protobuf's JSON mapping
    allows both)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-")
        if digits.isdecimal() and len(digits) <= _INT64_DIGITS + 1:
            return int(text)
    raise _Malformed(field, f"must be an integer (a number or a decimal string), got {value!r:.40}")


def _any_value(value: Any, field: str) -> Any:
    """An OTLP JSON AnyValue as plain Python (int64 arrives as a decimal string)."""
    if not isinstance(value, Mapping):
        raise _Malformed(field, "must be an AnyValue object")
    if "stringValue" in value:
        if not isinstance(value["stringValue"], str):
            raise _Malformed(f"{field}.stringValue", "must be a string")
        return value["stringValue"]
    if "intValue" in value:
        return _int64(value["intValue"], f"{field}.intValue")
    if "doubleValue" in value:
        double = value["doubleValue"]
        if isinstance(double, int | float | str) and not isinstance(double, bool):
            try:
                return float(double)
            except ValueError:
                pass
        raise _Malformed(f"{field}.doubleValue", "must be a number")
    if "boolValue" in value:
        if not isinstance(value["boolValue"], bool):
            raise _Malformed(f"{field}.boolValue", "must be true or false")
        return value["boolValue"]
    if "arrayValue" in value:
        values = _list((value["arrayValue"] or {}), "values", f"{field}.arrayValue")
        return [_any_value(v, f"{field}.arrayValue.values[{n}]") for n, v in enumerate(values)]
    if "kvlistValue" in value:
        values = _list(value["kvlistValue"] or {}, "values", f"{field}.kvlistValue")
        return _json_attributes(values, f"{field}.kvlistValue.values")
    return None


def _list(container: Any, key: str, field: str) -> list[Any]:
    """`container[key]` as a list (absent or null is empty)."""
    if not isinstance(container, Mapping):
        raise _Malformed(field, "must be an object")
    items = container.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise _Malformed(f"{field}.{key}", "must be an array")
    return items


def _json_attributes(items: Any, field: str) -> dict[str, Any]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise _Malformed(field, "must be an array of {key, value}")
    attributes: dict[str, Any] = {}
    for n, kv in enumerate(items):
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise _Malformed(f"{field}[{n}]", "must be an object with a string key")
        raw = kv.get("value")
        attributes[kv["key"]] = None if raw is None else _any_value(raw, f"{field}[{n}].value")
    return attributes


_HEX = frozenset("0123456789abcdefABCDEF")


def _hex_id(text: str, size: int) -> str:
    """An id as lower-case hex, the protobuf path's form, so a span has one event id whichever
    encoding carried it. OTLP/JSON ids are hex (kept as they are, lower-cased); senders using
    protobuf's own JSON mapping send base64, decoded here. Anything else is kept as given (not
    lower-cased: that would merge distinct ids), or lower-cased when it is all hex."""
    if len(text) == size * 2 and _HEX.issuperset(text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return raw.hex()
    return text.lower() if _HEX.issuperset(text) else text


def _id(span: Mapping[str, Any], key: str, size: int) -> str:
    value = span.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(key, "must be a hex string")
    return _hex_id(value, size)


def _json_span(span: Any, path: str, resource: dict[str, Any]) -> dict[str, Any]:
    """One span as a dict; a span that breaks the encoding carries `invalid` and is rejected
    on its own (its neighbours go on)."""
    flat: dict[str, Any] = {"path": path, "resource": resource, "attributes": {}}
    try:
        if not isinstance(span, Mapping):
            raise _Malformed("(span)", "must be an object")
        start = span.get("startTimeUnixNano")
        flat.update(
            trace_id=_id(span, "traceId", 16),
            span_id=_id(span, "spanId", 8),
            name=span.get("name"),
            start_ns=0 if start in (None, "") else _int64(start, "startTimeUnixNano"),
            attributes=_json_attributes(span.get("attributes"), "attributes"),
        )
    except _Malformed as exc:
        flat["invalid"] = (exc.field, exc.rule)
    return flat


def spans_from_json(body: bytes) -> list[dict[str, Any]]:
    """Flatten an OTLP JSON export into span dicts (ids as hex, times in ns).

    Raises `BadPayload` (400) when the export's structure is broken; a broken span, or a
    resource whose attributes break the encoding, rejects only the spans concerned.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"OTLP JSON body does not parse: {exc}") from None
    if not isinstance(document, Mapping):
        raise BadPayload("OTLP JSON body must be an object with resourceSpans")
    spans = []
    try:
        for r, rs in enumerate(_list(document, "resourceSpans", "(body)")):
            where = f"resourceSpans[{r}]"
            resource_error = None
            try:
                resource_doc = rs.get("resource") if isinstance(rs, Mapping) else None
                resource = _json_attributes(
                    (resource_doc or {}).get("attributes")
                    if isinstance(resource_doc or {}, Mapping)
                    else [],
                    "resource.attributes",
                )
            except _Malformed as exc:
                resource, resource_error = {}, (exc.field, exc.rule)
            for s, ss in enumerate(_list(rs, "scopeSpans", where)):
                scope = f"{where}.scopeSpans[{s}]"
                for i, span in enumerate(_list(ss, "spans", scope)):
                    flat = _json_span(span, f"{scope}.spans[{i}]", resource)
                    if resource_error is not None:
                        flat["invalid"] = resource_error
                    spans.append(flat)
    except _Malformed as exc:
        raise BadPayload(f"OTLP JSON {exc.field}: {exc.rule}") from None
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
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in AGGREGATE_OPERATIONS:
        return False
    kind = attrs.get("openinference.span.kind") or attrs.get("fi.span.kind")
    return kind is None or str(kind).upper() in MODEL_SPAN_KINDS


def to_draft(span: Mapping[str, Any]) -> Draft | None:
    """A span's usage, or None when the span is not a model call with token counts."""
    if "invalid" in span:
        raise RecordRejected(*span["invalid"])
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
