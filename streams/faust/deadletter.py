"""Dead letters: a record that fails validation is kept with its origin and the reason.

Bad input never stops the stream (design.md, invariant 4). The resolve stage turns every record
it cannot read (not JSON, an unknown type, a field breaking a rule, an event on the wrong
partition) into one `DeadLettered` on the dead-letter topic, with topic, partition and offset,
and goes on with the next record. Under at-least-once a crash may dead-letter a record twice;
(topic, partition, offset, index) identifies it for whoever reads the topic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from schemas.errors import AllotmentError, InvalidEvent
from schemas.signals import DeadLettered


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
    event = DeadLettered(
        topic=rejected.topic,
        partition=rejected.partition,
        offset=rejected.offset,
        reason=rejected.reason + where,
        errors=rejected.errors,
        payload_b64=base64.b64encode(rejected.payload).decode(),
        dead_lettered_at=now or datetime.now(UTC),
    )
    return orjson.dumps(event.to_wire())


def dead_letter_key(rejected: Rejected) -> bytes:
    index = "" if rejected.index is None else f":{rejected.index}"
    return f"{rejected.topic}:{rejected.partition}:{rejected.offset}{index}".encode()
