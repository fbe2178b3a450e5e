"""One span is one event, whichever OTLP encoding carried it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.ingest.batch import map_records
from services.ingest.keys import IngestKey, hash_key
from services.ingest.sources import otlp

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = IngestKey("k1", "acme", hash_key("secret"))
TRACE = bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
SPAN = bytes.fromhex("EEE19B7EC3C1B174")


def _protobuf() -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.start_time_unix_nano = TRACE, SPAN, 1732700000000000000
    for name, value in (("gen_ai.usage.input_tokens", 10), ("gen_ai.usage.output_tokens", 2)):
        attribute = span.attributes.add()
        attribute.key, attribute.value.int_value = name, value
    return request.SerializeToString()


def _json(trace_id: str, span_id: str) -> bytes:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "startTimeUnixNano": "1732700000000000000",
        "attributes": [
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 2}},
        ],
    }
    return orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})


def _event_id(spans: list[dict[str, Any]]) -> str:
    batch = map_records(spans, otlp.to_draft, KEY, NOW)
    assert not batch.rejected
    return batch.events[0].event_id


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("trace_id", "span_id"),
    [
        (TRACE.hex(), SPAN.hex()),  # the OTLP/JSON encoding: hex
        (TRACE.hex().upper(), SPAN.hex().upper()),
        (_b64(TRACE), _b64(SPAN)),  # protobuf's own JSON mapping: base64
    ],
)
def test_a_span_has_one_event_id_over_protobuf_and_json(trace_id: str, span_id: str):
    over_protobuf = _event_id(otlp.spans_from_protobuf(_protobuf()))
    assert _event_id(otlp.spans_from_json(_json(trace_id, span_id))) == over_protobuf


def test_hex_ids_keep_the_request_id_they_had():
    (span,) = otlp.spans_from_json(_json(TRACE.hex().upper(), SPAN.hex()))
    assert (span["trace_id"], span["span_id"]) == (TRACE.hex(), SPAN.hex())


def test_ids_that_are_neither_keep_their_case():
    first = otlp.spans_from_json(_json("Ab+Z", "x"))[0]["trace_id"]
    second = otlp.spans_from_json(_json("aB+z", "x"))[0]["trace_id"]
    assert first != second
