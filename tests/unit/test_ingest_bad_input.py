"""Input that once failed whole requests with 500 is now one record's rejection (invariant 4).

Each case names the field and the rule; the records beside it are kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.token_conventions import count
from services.ingest.batch import map_records
from services.ingest.errors import BadPayload, RecordRejected
from services.ingest.keys import IngestKey, hash_key
from services.ingest.sources import litellm, native, otlp
from services.ingest.sources.base import parse_time, usd_to_micros

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = IngestKey("k1", "acme", hash_key("secret"))
HUGE = "9" * 5000


def _raise(field: str, rule: str) -> None:
    raise RecordRejected(field, rule)


def test_a_count_of_thousands_of_digits_is_out_of_range_not_a_crash():
    with pytest.raises(RecordRejected) as caught:
        count(HUGE, "usage", "prompt_tokens", policy=_raise)
    assert caught.value.field == "usage.prompt_tokens"
    assert "5000-digit" in caught.value.rule
    with pytest.raises(RecordRejected, match=">= 0"):
        count("-" + HUGE, "usage", "prompt_tokens", policy=_raise)
    assert count("0" * 6000 + "7", "usage", policy=_raise) == 7


@pytest.mark.parametrize("cost", ["NaN", "Infinity", "-inf", "1e400", 1e308])
def test_a_cost_that_is_not_finite_is_rejected(cost: Any):
    with pytest.raises(RecordRejected) as caught:
        usd_to_micros(cost, "response_cost")
    assert caught.value.field == "response_cost"


def test_an_epoch_time_of_thousands_of_digits_is_rejected():
    with pytest.raises(RecordRejected) as caught:
        parse_time(HUGE, "startTime")
    assert caught.value.field == "startTime"
    with pytest.raises(RecordRejected):
        parse_time("²", "startTime")  # a digit to isdigit(), not to int()


EDGE_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T05:00:00+23:59",
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=3))),
]


@pytest.mark.parametrize("value", EDGE_TIMES)
def test_a_time_outside_the_years_once_in_utc_names_its_field(value: Any):
    """Review 3B, finding 7: it was rejected as '(record): could not be read (OverflowError)'."""
    with pytest.raises(RecordRejected) as caught:
        parse_time(value, "occurred_at")
    assert caught.value.field == "occurred_at"
    assert "years 1..9999" in caught.value.rule
    good = {"source_request_id": "a", "occurred_at": "2026-11-27T10:00:00Z", "output": 5}
    bad = {**good, "source_request_id": "b", "occurred_at": value}
    if isinstance(value, str):  # as a record: rejected by field, the other record kept
        batch = map_records([good, bad], native.to_draft, KEY, NOW)
        assert [(r.index, r.field) for r in batch.rejected] == [(1, "occurred_at")]
        assert len(batch.events) == 1


OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


MOMENTS = st.one_of(  # the ends of the range, where an offset carries a time out of it
    st.datetimes(max_value=datetime(1, 1, 2), timezones=OFFSETS),
    st.datetimes(min_value=datetime(9999, 12, 30), timezones=OFFSETS),
    st.datetimes(timezones=OFFSETS),
)


@given(MOMENTS, st.booleans())
def test_any_iso_time_with_any_offset_is_a_time_or_a_named_rejection(
    moment: datetime, as_text: bool
):
    value: Any = moment.isoformat() if as_text else moment
    try:
        parsed = parse_time(value, "occurred_at")
    except RecordRejected as rejected:
        assert rejected.field == "occurred_at"
    else:
        assert parsed.utcoffset() == timedelta(0) and parsed == moment


def test_a_bad_record_beside_good_ones_is_rejected_alone():
    good = {"source_request_id": "a", "occurred_at": "2026-11-27T10:00:00Z", "output": 5}
    records = [good, {**good, "source_request_id": "b", "output": HUGE}]
    batch = map_records(records, native.to_draft, KEY, NOW)
    assert [e.source_request_id for e in batch.events] == ["a"]
    assert [(r.index, r.field) for r in batch.rejected] == [(1, "output")]

    litellm_good = {"id": "ok", "startTime": 1764237600.0, "prompt_tokens": 1}
    batch = map_records(
        [litellm_good, {**litellm_good, "id": "bad", "response_cost": "NaN"}],
        litellm.to_draft,
        KEY,
        NOW,
    )
    assert (len(batch.events), [r.field for r in batch.rejected]) == (1, ["response_cost"])


def test_a_mapper_that_fails_unexpectedly_rejects_only_that_record(caplog):
    def mapper(record: Any) -> Any:
        if record == "boom":
            raise TypeError("unhashable")
        return native.to_draft(record)

    good = {"source_request_id": "a", "occurred_at": "2026-11-27T10:00:00Z", "output": 5}
    batch = map_records([good, "boom"], mapper, KEY, NOW)
    assert len(batch.events) == 1
    assert [(r.index, r.field) for r in batch.rejected] == [(1, "(record)")]
    assert "TypeError" in batch.rejected[0].rule
    assert "record 1" in caplog.text


def _export(*spans: Any, resource: Any = None) -> bytes:
    rs: dict[str, Any] = {"scopeSpans": [{"spans": list(spans)}]}
    if resource is not None:
        rs["resource"] = {"attributes": resource}
    return orjson.dumps({"resourceSpans": [rs]})


def _span(n: int, attrs: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {
        "traceId": "0" * 31 + "1",
        "spanId": f"{n:016x}",
        "startTimeUnixNano": "1732700000000000000",
        "attributes": attrs,
        **fields,
    }


def _int(key: str, value: Any) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": value}}


GOOD = [_int("gen_ai.usage.input_tokens", "10"), _int("gen_ai.usage.output_tokens", 2)]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (_span(2, [_int("gen_ai.usage.input_tokens", "ten")]), "attributes[0].value.intValue"),
        (_span(2, GOOD, startTimeUnixNano="yesterday"), "startTimeUnixNano"),
        (
            _span(2, [{"key": "gen_ai.usage.input_tokens", "value": {"stringValue": HUGE}}]),
            "gen_ai.usage.input_tokens",
        ),
        (
            _span(2, [{"key": "x", "value": {"boolValue": "false"}}]),
            "attributes[0].value.boolValue",
        ),
        (_span(2, GOOD, traceId=7), "traceId"),
        (_span(2, "not a list"), "attributes"),
        ("not a span", "(span)"),
    ],
)
def test_a_malformed_span_is_rejected_alone(bad: Any, field: str):
    spans = otlp.spans_from_json(_export(_span(1, GOOD), bad))
    batch = map_records(spans, otlp.to_draft, KEY, NOW)
    assert [e.input_uncached for e in batch.events] == [10]
    assert [(r.index, r.field) for r in batch.rejected] == [(1, field)]


def test_an_aggregate_marker_of_the_wrong_type_does_not_fail_the_span():
    operation = {"key": "gen_ai.operation.name", "value": {"arrayValue": {"values": []}}}
    spans = otlp.spans_from_json(_export(_span(1, [*GOOD, operation])))
    batch = map_records(spans, otlp.to_draft, KEY, NOW)
    assert (len(batch.events), batch.rejected) == (1, [])


@pytest.mark.parametrize(
    "body",
    [
        {"resourceSpans": ["x"]},
        {"resourceSpans": 3},
        {"resourceSpans": [{"scopeSpans": {"spans": []}}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]},
    ],
)
def test_a_broken_export_structure_is_a_bad_payload(body: Any):
    with pytest.raises(BadPayload, match=r"resourceSpans|body"):
        otlp.spans_from_json(orjson.dumps(body))


def test_a_bad_resource_attribute_rejects_the_spans_of_that_resource_only():
    bad_resource = [{"key": "service.name", "value": "not an AnyValue"}]
    body = orjson.loads(_export(_span(1, GOOD), resource=bad_resource))
    body["resourceSpans"].append({"scopeSpans": [{"spans": [_span(2, GOOD)]}]})
    batch = map_records(otlp.spans_from_json(orjson.dumps(body)), otlp.to_draft, KEY, NOW)
    assert [e.source_request_id.endswith("2") for e in batch.events] == [True]
    assert [(r.index, r.field) for r in batch.rejected] == [(0, "resource.attributes[0].value")]
