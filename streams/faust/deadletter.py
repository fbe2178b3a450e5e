"""Dead letters: a record that fails validation is kept with its origin and the reason.

Bad input never stops the stream (design.md, invariant 4). The resolve stage turns every record
it cannot read (not JSON, an unknown type, a field breaking a rule, an event on the wrong
partition) into one `DeadLettered` on the dead-letter topic, with topic, partition and offset,
and goes on with the next record. Under at-least-once a crash may dead-letter a record twice;
(topic, partition, offset, index) identifies it for whoever reads the topic.

A dead letter must itself be accepted by the broker (1 MB per record by default): one it refuses
would fail the batch, the worker would exit to read the same record again, and the stream would
stop on it for good. So a dead letter keeps at most `MAX_PAYLOAD_BYTES` of the record, marked
`payload_truncated` with the whole record's size and SHA-256 (the record itself stays on its
source topic at the offset the letter names), and at most `MAX_REASON_CHARS` of the reason and
`MAX_ERRORS` rule texts of `MAX_ERROR_CHARS` each (a record with 100,000 unknown fields breaks
100,000 rules). Whatever the input, a dead letter stays under ~600 KB.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from schemas.errors import AllotmentError, InvalidEvent
from schemas.signals import DeadLettered

MAX_PAYLOAD_BYTES = 256 * 1024
"""Bytes of the record a dead letter keeps (base64 makes them ~350 KB on the wire)."""
MAX_REASON_CHARS = 4096
MAX_ERRORS = 50
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Rejected:
    """One unreadable record (or one unreadable event inside an envelope)."""

    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes
    errors: list[str] = field(default_factory=list)
    index: int | None = None


def reason_of(exc: AllotmentError) -> tuple[str, list[str]]:
    """A one-line reason and, for contract violations, one entry per broken field rule."""
    if isinstance(exc, InvalidEvent):
        return str(exc), [str(e) for e in exc.errors]
    return str(exc), []


def to_dead_letter(rejected: Rejected, now: datetime | None = None) -> bytes:
    """The wire form of the dead letter (`now` defaults to the adapter's wall clock)."""
    where = "" if rejected.index is None else f" (envelope index {rejected.index})"
    payload = rejected.payload
    kept = payload[:MAX_PAYLOAD_BYTES]
    cut = len(kept) < len(payload)
    event = DeadLettered(
        topic=rejected.topic,
        partition=rejected.partition,
        offset=rejected.offset,
        reason=clip(rejected.reason, MAX_REASON_CHARS) + where,
        errors=clipped_errors(rejected.errors),
        payload_b64=base64.b64encode(kept).decode(),
        dead_lettered_at=now or datetime.now(UTC),
        payload_truncated=cut,
        payload_size=len(payload) if cut else None,
        payload_sha256=hashlib.sha256(payload).hexdigest() if cut else None,
    )
    return orjson.dumps(event.to_wire())


def clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... ({len(text) - limit} more characters)"


def clipped_errors(errors: list[str]) -> list[str]:
    """The first `MAX_ERRORS` rule texts, each clipped, and a last entry counting the rest."""
    kept = [clip(e, MAX_ERROR_CHARS) for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        kept.append(f"... and {len(errors) - MAX_ERRORS} more broken rules")
    return kept


def dead_letter_key(rejected: Rejected) -> bytes:
    index = "" if rejected.index is None else f":{rejected.index}"
    return f"{rejected.topic}:{rejected.partition}:{rejected.offset}{index}".encode()
