"""Reading and writing events on the wire, with upcasting of old versions.

An upcaster is a pure function `dict -> dict` that lifts a payload from version N to N+1. Reading
applies the chain from the stored version to the current one, then validates, so events written
years ago stay readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from schemas.alerts import AlertAbandoned, AlertDelivered
from schemas.allocation import (
    AllocationMoved,
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.charges import BudgetCharged
from schemas.errors import FieldError, InvalidEvent, UnknownEventType
from schemas.signals import (
    DeadLettered,
    ForecastUpdated,
    PolicyChanged,
    ProjectedOverrun,
    ThresholdCrossed,
)
from schemas.usage import UsageBatch, UsageRecorded

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
