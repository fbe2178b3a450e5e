"""Reading and writing events on the wire, with upcasting of old versions.

An upcaster is a pure function `dict -> dict` that lifts a payload from version N to N+1. Reading
applies the chain from the stored version to the current one, then validates, so events written
years ago stay readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.alerts import AlertAbandoned, AlertDelivered
from schemas.allocation import (
    AllocationMoved,
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.base import Event, field_errors
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.charges import BudgetCharged
from schemas.errors import AllotmentError, FieldError, InvalidEvent, UnknownEventType
from schemas.signals import (
    DeadLettered,
    ForecastUpdated,
    PolicyChanged,
    ProjectedOverrun,
    ThresholdCrossed,
)
from schemas.usage import MAX_AHEAD, UsageBatch, UsageRecorded, ahead_problem, usage_fields

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        UsageRecorded,
        UsageBatch,
        BudgetDefined,
        BudgetAmended,
        BudgetRetired,
        ThresholdCrossed,
        PolicyChanged,
        ForecastUpdated,
        ProjectedOverrun,
        DeadLettered,
        OverflowDrawn,
        AllocationMoved,
        ReservationMade,
        ReservationReleased,
        RebalanceRuleSet,
        BudgetCharged,
        AlertDelivered,
        AlertAbandoned,
    )
}

UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""(type, from_version) -> upcaster to from_version + 1. Register each with its test."""


def register(cls: type[Event]) -> type[Event]:
    """Add an event type defined outside this module to the codec's registry."""
    EVENT_TYPES[cls.TYPE] = cls
    return cls


def upcast(payload: dict[str, Any]) -> dict[str, Any]:
    event_type = payload.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise UnknownEventType(event_type, payload.get("version"))
    version = payload.get("version", 1)
    if not isinstance(version, int) or version < 1 or version > cls.VERSION:
        raise UnknownEventType(event_type, version)
    while version < cls.VERSION:
        step = UPCASTERS.get((cls.TYPE, version))
        if step is None:
            raise UnknownEventType(event_type, version)
        payload = step(payload)
        version += 1
        payload["version"] = version
    return payload


def from_dict(payload: Any) -> Event:
    """Validate any known payload, upcast first; raises `InvalidEvent` or `UnknownEventType`."""
    if not isinstance(payload, dict):
        raise InvalidEvent("(unknown)", [FieldError("(payload)", "must be a JSON object")])
    payload = upcast(payload)
    result: Event = EVENT_TYPES[payload["type"]].parse(payload)
    return result


def decode(raw: bytes) -> Event:
    """Bytes from Kafka to a validated event."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("(unknown)", [FieldError("(payload)", f"is not JSON: {exc}")]) from None
    return from_dict(payload)


def encode(event: Event) -> bytes:
    return orjson.dumps(event.to_wire())


BROKER_TIME = "the time the broker stored the record"

UsageItem = tuple[int, Any, dict[str, Any] | AllotmentError]
"""One event of a usage record: (index in the envelope, payload as read, and either its field
values, as `UsageRecorded` holds them, or why it is not charged)."""

_VALIDATE_USAGE = UsageRecorded.__pydantic_validator__.validate_python
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def usage_event(payload: Any) -> dict[str, Any]:
    """Validate one usage event against the contract (upcasting an older version first).

    Returns its field values: `usage_fields` when it can say (most events, at about half the
    cost of building the model), else the model's, which also raises the contract's reasons
    (`InvalidEvent`, or `UnknownEventType` for a version nothing upcasts).
    """
    if not isinstance(payload, dict):
        raise InvalidEvent("UsageRecorded", [FieldError("(payload)", "must be a JSON object")])
    kind = payload.get("type", "UsageRecorded")
    if kind != "UsageRecorded":
        raise InvalidEvent(
            "UsageRecorded", [FieldError("type", f"must be UsageRecorded, got {kind!r}")]
        )
    if payload.get("version", 1) != UsageRecorded.VERSION:
        payload = upcast({**payload, "type": kind})
    else:
        fields = usage_fields(payload)
        if fields is not None:
            return fields
    try:
        event: UsageRecorded = _VALIDATE_USAGE(payload)
    except ValidationError as exc:
        raise InvalidEvent("UsageRecorded", field_errors(exc)) from None
    return event.__dict__


def _usage_payloads(raw: bytes) -> tuple[bool, list[tuple[int, Any]]]:
    """Whether the record is an envelope, and its (index, payload) pairs."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("(unknown)", [FieldError("(payload)", f"is not JSON: {exc}")]) from None
    if isinstance(payload, dict) and payload.get("type") == "UsageBatch":
        events = payload.get("events")
        if not isinstance(events, list) or not events:
            raise InvalidEvent("UsageBatch", [FieldError("events", "must be a non-empty list")])
        if payload.get("version", 1) != UsageBatch.VERSION:
            raise InvalidEvent("UsageBatch", [FieldError("version", "must be 1")])
        return True, list(enumerate(events))
    return False, [(0, payload)]


@dataclass(frozen=True)
class UsageReader:
    """Which events of a usage-topic record are charged, event by event, and why not.

    Every reader of the usage topic that counts tokens (the worker's resolve stage, the
    warehouse) reads it through this one class, so they count the same events: an envelope is
    never taken or dropped as a whole (`UsageBatch` as a model would refuse all its events for
    one bad one); each event is charged or refused on its own, for
    - the contract (`usage_event`: fields, token sums, `MAX_AHEAD` against received_at);
    - its routing, with `partition_of(event_id, partitions)` (Kafka's default partitioner,
      `services.common.kafka.partition_for`): an event whose id hashes to another partition
      than the one it was read from is refused, since dedupe by id is local to a partition
      (`UsageBatch`'s own rule);
    - the broker's time (with `broker_times`, when the records' times are real ones): an event
      stamped more than `MAX_AHEAD` after its record's broker timestamp is refused (a producer
      whose received_at is as wrong as its occurred_at).
      The record time is written with the record and the allowance is the contract's fixed
      constant, not a setting, so every reader and every replay refuse exactly the same events.
      (A few minutes ahead is charged; the worker's ledger caps its "now" instead.)
    Pure: the record's partition and time are arguments, nothing is read from a clock.
    """

    partition_of: Callable[[str, int], int] | None = None
    partitions: int = 1
    broker_times: bool = True

    def read(
        self, raw: bytes, partition: int, timestamp_ms: int
    ) -> tuple[bool, Iterator[UsageItem]]:
        """Whether the record is an envelope, and its events in order (lazily).

        Raises `InvalidEvent` at once when the record as a whole cannot be read (not JSON, an
        envelope without events or of an unknown version); `timestamp_ms` <= 0 means the record
        has no broker time (then only the other rules apply).
        """
        envelope, payloads = _usage_payloads(raw)
        stored_at = None
        if self.broker_times and timestamp_ms > 0:
            stored_at = _EPOCH + timedelta(milliseconds=timestamp_ms)
        return envelope, self._events(payloads, partition, stored_at)

    def _events(
        self, payloads: list[tuple[int, Any]], partition: int, stored_at: datetime | None
    ) -> Iterator[UsageItem]:
        partition_of, partitions = self.partition_of, self.partitions
        latest = None if stored_at is None else stored_at + MAX_AHEAD  # one compare per event
        for index, payload in payloads:
            try:
                fields = usage_event(payload)
                if partition_of is not None:
                    home = partition_of(fields["event_id"], partitions)
                    if home != partition:
                        rule = f"hashes to usage partition {home}, arrived on {partition}"
                        raise InvalidEvent("UsageRecorded", [FieldError("event_id", rule)])
                if latest is not None and fields["occurred_at"] > latest:
                    ahead = ahead_problem(fields["occurred_at"], latest - MAX_AHEAD, BROKER_TIME)
                    raise InvalidEvent("UsageRecorded", [FieldError("occurred_at", str(ahead))])
            except AllotmentError as exc:  # InvalidEvent, or UnknownEventType from upcasting
                yield index, payload, exc
                continue
            yield index, payload, fields
