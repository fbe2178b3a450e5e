"""The alert delivery events: round trip, bounded texts, and errors that name field and rule."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.alerts import MAX_DETAIL, AlertAbandoned, AlertDelivered, bounded
from schemas.codec import decode, encode
from schemas.errors import InvalidEvent
from schemas.topics import ALERT_DELIVERIES, ALL
from services.common.kafka import topic_configs

DELIVERED: dict[str, Any] = {
    "type": "AlertDelivered",
    "version": 1,
    "alert_id": "3f0b5a52-6f7e-5d3a-9c1b-2a4e6f8d0b1c",
    "tenant": "acme",
    "budget_id": "acme/support",
    "period_key": "2026-10",
    "kind": "threshold",
    "discriminator": "90:total",
    "action": "notify",
    "channel": "finops-slack",
    "channel_type": "slack",
    "source": {
        "type": "ThresholdCrossed",
        "topic": "allotment.thresholds",
        "partition": 2,
        "offset": 41,
        "occurred_at": "2026-10-17T12:30:00+02:00",
    },
    "attempts": 2,
    "first_attempt_at": "2026-10-17T10:30:01Z",
    "last_attempt_at": "2026-10-17T10:30:04Z",
    "delivered_at": "2026-10-17T10:30:05Z",
    "receiver_status": "HTTP 200: ok",
}
ABANDONED: dict[str, Any] = {
    **{k: v for k, v in DELIVERED.items() if k not in ("delivered_at", "receiver_status")},
    "type": "AlertAbandoned",
    "abandoned_at": "2026-10-17T10:30:05Z",
    "reason": "rejected",
    "error": "slack: HTTP 400: invalid_payload",
}


@pytest.mark.parametrize("payload", [DELIVERED, ABANDONED])
def test_outcomes_round_trip_through_the_codec(payload: dict[str, Any]) -> None:
    event = decode(orjson.dumps(payload))
    assert payload["type"] == event.TYPE
    assert decode(encode(event)) == event
    assert event.to_wire()["source"]["occurred_at"] == "2026-10-17T10:30:00Z"  # now in UTC


@pytest.mark.parametrize(
    ("cls", "base", "change", "field", "rule_part"),
    [
        (AlertDelivered, DELIVERED, {"alert_id": "42"}, "alert_id", "should match pattern"),
        (AlertDelivered, DELIVERED, {"attempts": 0}, "attempts", "greater than or equal to 1"),
        (AlertDelivered, DELIVERED, {"kind": "spam"}, "kind", "'threshold'"),
        (AlertDelivered, DELIVERED, {"channel_type": "fax"}, "channel_type", "'slack'"),
        (AlertDelivered, DELIVERED, {"channel": ""}, "channel", "at least 1 character"),
        (
            AlertDelivered,
            DELIVERED,
            {"receiver_status": "x" * (MAX_DETAIL + 1)},
            "receiver_status",
            f"at most {MAX_DETAIL} characters",
        ),
        (
            AlertDelivered,
            DELIVERED,
            {"delivered_at": "2026-10-17T10:30:05"},
            "delivered_at",
            "UTC offset",
        ),
        (
            AlertDelivered,
            DELIVERED,
            {"first_attempt_at": "2026-10-17T11:00:00Z"},
            "last_attempt_at",
            "must not be before first_attempt_at",
        ),
        (
            AlertDelivered,
            DELIVERED,
            {"source": {**DELIVERED["source"], "offset": -1}},
            "source.offset",
            "greater than or equal to 0",
        ),
        (AlertDelivered, DELIVERED, {"tenant": None}, "tenant", "valid string"),
        (AlertAbandoned, ABANDONED, {"error": ""}, "error", "at least 1 character"),
        (AlertAbandoned, ABANDONED, {"reason": "bored"}, "reason", "'rejected'"),
        (AlertAbandoned, ABANDONED, {"receiver_status": "ok"}, "receiver_status", "not a field"),
    ],
)
def test_bad_outcomes_name_the_field_and_the_rule(
    cls: type[AlertDelivered] | type[AlertAbandoned],
    base: dict[str, Any],
    change: dict[str, Any],
    field: str,
    rule_part: str,
) -> None:
    with pytest.raises(InvalidEvent) as err:
        cls.parse({**base, **change})
    fields = {e.field: e.rule for e in err.value.errors}
    assert field in fields, fields
    assert rule_part in fields[field]


def test_a_missing_field_is_named() -> None:
    payload = {k: v for k, v in ABANDONED.items() if k != "abandoned_at"}
    with pytest.raises(InvalidEvent) as err:
        AlertAbandoned.parse(payload)
    assert [(e.field, e.rule) for e in err.value.errors] == [("abandoned_at", "is required")]


def test_bounded_cuts_long_texts_to_what_the_event_accepts() -> None:
    assert bounded("short") == "short"
    cut = bounded("e" * 5000)
    assert len(cut) == MAX_DETAIL and cut.endswith("…")
    AlertAbandoned.parse({**ABANDONED, "error": cut})  # accepted as it is


def test_the_deliveries_topic_keeps_its_facts_forever_and_is_created() -> None:
    assert ALERT_DELIVERIES in ALL
    config = topic_configs(ALERT_DELIVERIES)
    assert (config["retention.ms"], config["cleanup.policy"]) == ("-1", "delete")
    assert ALERT_DELIVERIES.key == "budget_id"
