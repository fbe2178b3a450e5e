"""`usage_fields`, the resolve stage's quick validation: never accepts what the model refuses.

Whenever it returns fields, `UsageRecorded` must accept the same payload with the same values
(timestamps: the same instant). It may decline (None) anything; the model then decides.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.usage import UsageRecorded, usage_fields

BASE: dict[str, Any] = {
    "type": "UsageRecorded",
    "version": 1,
    "event_id": "litellm:abc",
    "source": "litellm",
    "occurred_at": "2026-11-17T09:30:00+01:00",
    "received_at": "2026-11-17T08:30:01Z",
    "tenant": "acme",
    "team": "support",
    "request_model": "gpt-4o",
    "input_uncached": 100,
    "cache_read": 20,
    "output": 40,
    "reasoning": 10,
}

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=200),
    st.sampled_from([10**15, 10**15 + 1, 1.0, 2.5, "7", "", "x", "a" * 201, [], {}, ["t"]]),
    st.sampled_from(
        ["2026-11-17T09:30:00", "2026-11-17T09:30:00Z", "2026-11-17", "not a time", 1_763_000_000]
    ),
    st.sampled_from(["UsageRecorded", "estimated", "forwarded", "acme", "bad tenant!"]),
)
KEYS = st.sampled_from(
    sorted(set(UsageRecorded.model_fields) | {"colour"} | set(BASE)),
)


def _same(fields: dict[str, Any], event: UsageRecorded) -> list[str]:
    return [name for name in UsageRecorded.model_fields if fields[name] != getattr(event, name)]


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(KEYS, ODD_VALUES, max_size=4),
    drops=st.lists(KEYS, max_size=3),
)
def test_fields_given_are_the_models_fields(changes: dict[str, Any], drops: list[str]) -> None:
    payload = {**BASE, **changes}
    for key in drops:
        payload.pop(key, None)
    fields = usage_fields(payload)
    if fields is None:
        return
    event = UsageRecorded.model_validate(payload)  # raises if the quick path let a bad one in
    assert _same(fields, event) == []


def test_a_plain_event_takes_the_quick_path_with_derived_totals() -> None:
    fields = usage_fields(BASE)
    assert fields is not None
    assert (fields["input_total"], fields["total"]) == (120, 160)
    assert _same(fields, UsageRecorded.model_validate(BASE)) == []


def test_everything_the_model_refuses_or_must_derive_is_left_to_the_model() -> None:
    refused = [
        {**BASE, "occurred_at": "2026-11-17T09:30:00"},  # naive
        {**BASE, "reasoning": 41},
        {**BASE, "input_total": 99},
        {**BASE, "total": 1},
        {**BASE, "colour": "red"},
        {**BASE, "output": -1},
    ]
    for payload in refused:
        assert usage_fields(payload) is None, payload
    derived_id = {k: v for k, v in BASE.items() if k != "event_id"}
    assert usage_fields({**derived_id, "source_request_id": "r-1"}) is None
    assert usage_fields({**BASE, "input_uncached": "100"}) is None  # model: total reads 0
