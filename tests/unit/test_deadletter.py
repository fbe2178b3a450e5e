"""Dead letters stay small enough for the broker, whatever record they keep."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime

import orjson
import pytest

from schemas.codec import decode, encode
from schemas.errors import InvalidEvent
from schemas.signals import DeadLettered
from streams.faust.deadletter import (
    MAX_ERRORS,
    MAX_PAYLOAD_BYTES,
    Rejected,
    to_dead_letter,
)

AT = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
BROKER_LIMIT = 1_000_000  # the broker's default max.message.bytes is 1,048,588


def test_a_small_record_is_kept_whole_in_the_version_1_form() -> None:
    payload = b'{"type": "Nonsense"}'
    wire = orjson.loads(to_dead_letter(Rejected("p.usage", 2, 7, "unknown type", payload), AT))
    assert base64.b64decode(wire["payload_b64"]) == payload
    assert set(wire) == {
        "type", "version", "topic", "partition", "offset", "reason", "errors", "payload_b64",
        "dead_lettered_at",
    }  # fmt: skip
    assert isinstance(decode(orjson.dumps(wire)), DeadLettered)


def test_a_large_record_is_cut_with_its_size_and_hash() -> None:
    payload = b'{"type":"UsageRecorded","junk":"' + b"a" * 5_000_000 + b'"}'
    raw = to_dead_letter(Rejected("p.usage", 3, 41, "missing event_id", payload), AT)
    assert len(raw) < BROKER_LIMIT
    letter = decode(raw)
    assert isinstance(letter, DeadLettered)
    assert letter.payload_truncated is True
    assert letter.payload_size == len(payload)
    assert letter.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert base64.b64decode(letter.payload_b64) == payload[:MAX_PAYLOAD_BYTES]
    assert (letter.topic, letter.partition, letter.offset) == ("p.usage", 3, 41)
    assert orjson.loads(encode(letter)) == orjson.loads(raw)


def test_a_record_exactly_at_the_limit_is_not_cut() -> None:
    payload = b"x" * MAX_PAYLOAD_BYTES
    wire = orjson.loads(to_dead_letter(Rejected("p.usage", 0, 0, "not JSON", payload), AT))
    assert "payload_truncated" not in wire
    assert base64.b64decode(wire["payload_b64"]) == payload


def test_a_flood_of_broken_rules_is_clipped_and_counted() -> None:
    """Worst case for size: every part at its limit and full of characters JSON escapes 6x."""
    errors = [f"field_{i}: " + "\x00" * 10_000 for i in range(100_000)]
    rejected = Rejected("p.usage", 0, 5, "\x00" * 2_000_000, b"\x00" * 3_000_000, errors, 499)
    raw = to_dead_letter(rejected, AT)
    assert len(raw) < 600_000
    letter = decode(raw)
    assert isinstance(letter, DeadLettered)
    assert len(letter.errors) == MAX_ERRORS + 1
    assert letter.errors[-1] == f"... and {100_000 - MAX_ERRORS} more broken rules"
    assert letter.errors[0].startswith("field_0: ")
    assert letter.reason.endswith("more characters) (envelope index 499)")


def test_a_cut_payload_must_say_its_size_and_hash() -> None:
    whole = orjson.loads(to_dead_letter(Rejected("p.usage", 0, 0, "r", b"abc"), AT))
    with pytest.raises(InvalidEvent) as caught:
        DeadLettered.parse({**whole, "payload_truncated": True, "payload_sha256": "0" * 64})
    assert [e.field for e in caught.value.errors] == ["payload_size"]
    with pytest.raises(InvalidEvent) as caught:
        DeadLettered.parse({**whole, "payload_truncated": True, "payload_size": 3})
    assert [e.field for e in caught.value.errors] == ["payload_sha256"]
