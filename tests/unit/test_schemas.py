"""The event contract: checked-in JSON Schemas, errors that name field and rule, stable ids."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.budgets import BudgetDefined
from schemas.codec import decode, encode, upcast
from schemas.errors import InvalidEvent, UnknownEventType
from schemas.export import JSON_DIR, rendered
from schemas.usage import UsageRecorded, scoped_event_id

USAGE: dict[str, Any] = {
    "source": "litellm",
    "source_request_id": "req-7",
    "occurred_at": "2026-11-17T09:30:00+01:00",
    "received_at": "2026-11-17T08:30:01Z",
    "tenant": "acme",
    "input_uncached": 100,
    "output": 40,
    "reasoning": 10,
}
BUDGET: dict[str, Any] = {
    "budget_id": "acme/support",
    "tenant": "acme",
    "revision": 1,
    "occurred_at": "2026-11-01T00:00:00Z",
    "actor": "finance@acme",
    "spec": {
        "name": "support copilot",
        "limits": {"total_tokens": 420_000_000},
        "period": {"kind": "month", "timezone": "Europe/Berlin"},
    },
}


def test_checked_in_json_schemas_match_the_models():
    on_disk = {path.name: path.read_text() for path in JSON_DIR.glob("*.json")}
    expected = rendered()
    hint = "run `.venv/bin/python -m schemas.export` and commit schemas/json/"
    assert sorted(on_disk) == sorted(expected), hint
    stale = [name for name, text in expected.items() if on_disk[name] != text]
    assert stale == [], hint


@pytest.mark.parametrize(
    ("change", "field", "rule_part"),
    [
        ({"occurred_at": "2026-11-17T09:30:00"}, "occurred_at", "UTC offset"),
        ({"output": -1}, "output", "greater than or equal to 0"),
        ({"reasoning": 41}, "reasoning", "must not exceed output"),
        ({"colour": "red"}, "colour", "is not a field"),
        ({"source_request_id": None}, "event_id", "is required"),
        ({"input_total": 99}, "input_total", "must equal"),
    ],
)
def test_invalid_usage_names_the_field_and_the_rule(change, field, rule_part):
    payload = {**USAGE, **change}
    with pytest.raises(InvalidEvent) as caught:
        UsageRecorded.parse(payload)
    assert caught.value.event_type == "UsageRecorded"
    assert any(e.field == field and rule_part in e.rule for e in caught.value.errors), (
        caught.value.errors
    )


def test_a_budget_in_an_unknown_zone_is_rejected_naming_the_nested_field():
    payload = {**BUDGET, "spec": {**BUDGET["spec"], "period": {"timezone": "Mars/Olympus"}}}
    with pytest.raises(InvalidEvent) as caught:
        BudgetDefined.parse(payload)
    [error] = caught.value.errors
    assert error.field == "spec.period.timezone"
    assert "IANA" in error.rule


def test_a_valid_budget_parses():
    budget = BudgetDefined.parse(BUDGET)
    assert budget.spec.period.timezone == "Europe/Berlin"


def test_derived_event_id_is_stable_and_depends_on_source_tenant_and_request():
    first = UsageRecorded.parse(USAGE)
    again = UsageRecorded.parse(dict(USAGE))
    assert first.event_id == again.event_id == scoped_event_id("litellm", "acme", "req-7")
    assert scoped_event_id("litellm", "acme", "req-8") != first.event_id
    assert scoped_event_id("helicone", "acme", "req-7") != first.event_id


def test_two_tenants_reusing_a_request_id_get_distinct_derived_event_ids():
    acme = UsageRecorded.parse(USAGE)
    globex = UsageRecorded.parse({**USAGE, "tenant": "globex"})
    assert acme.event_id != globex.event_id


def test_totals_are_derived_and_timestamps_normalised_to_utc():
    event = UsageRecorded.parse(USAGE)
    assert (event.input_total, event.total) == (100, 140)
    assert event.occurred_at.isoformat() == "2026-11-17T08:30:00+00:00"


def test_encode_then_decode_gives_the_same_event():
    event = UsageRecorded.parse(USAGE)
    assert decode(encode(event)) == event


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "UsageRecorded", "version": 99},
        {"type": "UsageRecorded", "version": 0},
        {"type": "NoSuchEvent", "version": 1},
        {"version": 1},
    ],
)
def test_upcast_rejects_unknown_types_and_versions(payload):
    with pytest.raises(UnknownEventType):
        upcast(payload)


def test_decode_rejects_bytes_that_are_not_json():
    with pytest.raises(InvalidEvent) as caught:
        decode(b"{not json")
    assert caught.value.errors[0].field == "(payload)"
