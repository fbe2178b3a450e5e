"""The one root of Allotment's exceptions.

Every domain error carries its context as fields, so an edge (HTTP handler, dead-letter writer,
CLI) can report it without parsing a message.
"""

from __future__ import annotations

from dataclasses import dataclass


class AllotmentError(Exception):
    """Root of every error Allotment raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One broken rule: `field` is a dotted path into the payload, `rule` says what it must be."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


class InvalidEvent(AllotmentError):
    """A payload does not satisfy the event contract. Names every field and rule it breaks."""

    def __init__(self, event_type: str, errors: list[FieldError]) -> None:
        self.event_type = event_type
        self.errors = errors
        super().__init__(f"invalid {event_type}: " + "; ".join(str(e) for e in errors))


class UnknownEventType(AllotmentError):
    """A payload names a type (or a version) that this build of the contract cannot read."""

    def __init__(self, event_type: object, version: object = None) -> None:
        self.event_type = event_type
        self.version = version
        super().__init__(f"unknown event type {event_type!r} version {version!r}")
