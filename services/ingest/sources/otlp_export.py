"""Reading an OTLP/HTTP trace export, protobuf or JSON, into one plain dict per span.

Each span dict holds `path` (where it sits in the export, for `partial_success`), `trace_id`,
`span_id` and `parent_span_id` as lower-case hex, `name`, `start_ns`, `attributes` and the
`resource` attributes. What the spans mean (usage, model calls) is `otlp.py`'s business.

OTLP/JSON is checked as it is read: a broken structure (`resourceSpans`, `scopeSpans`, `spans`
not arrays of objects) is a `BadPayload` naming the path; a span whose own fields break the
encoding, or whose resource's attributes do, carries `invalid = (field, rule)` and is rejected
alone.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.errors import BadPayload


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
            parent_span_id=_id(span, "parentSpanId", 8),
            name=span.get("name"),
            start_ns=0 if start in (None, "") else _int64(start, "startTimeUnixNano"),
            attributes=_json_attributes(span.get("attributes"), "attributes"),
        )
    except _Malformed as exc:
        flat["invalid"] = (exc.field, exc.rule)
    return flat


def read_json(body: bytes) -> list[dict[str, Any]]:
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


def read_protobuf(body: bytes) -> list[dict[str, Any]]:
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
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "start_ns": span.start_time_unix_nano,
                        "attributes": {kv.key: _pb_value(kv.value) for kv in span.attributes},
                        "resource": resource,
                    }
                )
    return spans
