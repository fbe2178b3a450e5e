"""What every source mapper produces, and the one place a draft becomes a `UsageRecorded`.

A mapper reads one record in its source's own format and returns a `Draft`: the request id the
source gave, when it happened, the exact token parts, the model and provider, and an attribute
context for attribution. `build_event` then applies the ingest key (tenant, attribution map)
and validates against the contract, so every source obeys the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.base import field_errors
from schemas.usage import UsageRecorded, scoped_event_id
from services.ingest.errors import RecordRejected
from services.ingest.keys import IngestKey
from services.ingest.tokens import TokenParts

_MAX_EPOCH_DIGITS = 24  # nanoseconds until long after any usable date


@dataclass(slots=True)
class Draft:
    """One record, read but not yet attributed or validated."""

    source: str
    source_request_id: str
    occurred_at: datetime | None
    tokens: TokenParts
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    cost_micros: int | None = None
    usage_status: str = "reported"
    context: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    tenant_claim: tuple[str, Any] | None = None
    event_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def require_str(record: Mapping[str, Any], key: str, field_name: str | None = None) -> str:
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordRejected(field_name or key, "is required (a non-empty string)")
    return value


def opt_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def parse_time(value: Any, field_name: str, *, assume_utc: bool = False) -> datetime:
    """ISO 8601 text or epoch seconds / milliseconds / nanoseconds, as an aware UTC time.

    Text without an offset is ambiguous and rejected, unless the source documents UTC
    (`assume_utc`, e.g. LiteLLM's `timestamp without time zone` columns).
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise RecordRejected(field_name, f"is not a usable epoch time ({value!r})") from None
        if seconds > 1e17:
            seconds /= 1e9
        elif seconds > 1e14:
            seconds /= 1e6
        elif seconds > 1e11:
            seconds /= 1e3
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise RecordRejected(field_name, f"is not a usable epoch time ({value!r})") from None
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.isdecimal():
            if len(text) > _MAX_EPOCH_DIGITS:  # also spares int() thousands of digits
                raise RecordRejected(field_name, f"is not a usable epoch time ({text[:30]}...)")
            return parse_time(int(text), field_name, assume_utc=assume_utc)
        try:
            parsed = datetime.fromisoformat(text)  # 3.11+: accepts "Z" and a space separator
        except ValueError:
            raise RecordRejected(field_name, f"must be an ISO 8601 time (got {value!r})") from None
    else:
        raise RecordRejected(field_name, "is required (an ISO 8601 time or epoch seconds)")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        if not assume_utc:
            raise RecordRejected(field_name, "must carry a UTC offset (naive times are ambiguous)")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise RecordRejected(
            field_name, f"is outside the years 1..9999 once converted to UTC (got {value!r})"
        ) from None


def usd_to_micros(value: Any, field_name: str, scale: float = 1.0) -> int | None:
    """A cost in dollars (or cents with scale=0.01) as whole micro-dollars."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RecordRejected(field_name, "must be a number")
    try:
        amount = float(value) * scale
    except (ValueError, OverflowError):
        raise RecordRejected(field_name, f"must be a number (got {str(value)[:40]!r})") from None
    if not math.isfinite(amount * 1_000_000):
        raise RecordRejected(field_name, f"must be a finite number (got {str(value)[:40]!r})")
    if amount < 0:
        raise RecordRejected(field_name, f"must be >= 0 (got {value!r})")
    return round(amount * 1_000_000)


def build_event(draft: Draft, key: IngestKey, received_at: datetime) -> UsageRecorded:
    """Attribute, tenant-check and validate one draft; raises `RecordRejected` naming a field."""
    if draft.tenant_claim is not None:
        where, claimed = draft.tenant_claim
        if claimed not in (None, "") and claimed != key.tenant:
            raise RecordRejected(
                where, f"must be the ingest key's tenant ({key.tenant!r}), not {claimed!r}"
            )
    payload: dict[str, Any] = {
        "event_id": scoped_event_id(
            draft.source, key.tenant, draft.event_id or draft.source_request_id
        ),
        "source": draft.source,
        "source_request_id": draft.source_request_id,
        # A source that does not say when (Helicone's webhook) fires right after the request.
        "occurred_at": draft.occurred_at or received_at,
        "received_at": received_at,
        "tenant": key.tenant,
        "provider": draft.provider,
        "request_model": draft.request_model,
        "response_model": draft.response_model,
        "cost_micros": draft.cost_micros,
        "usage_status": draft.usage_status,
        "properties": draft.properties,
        **draft.tokens.as_fields(),
        **key.attribution.resolve(draft.context, draft.defaults),
        **draft.extra,
    }
    try:
        return UsageRecorded.model_validate(payload)
    except ValidationError as exc:
        raise RecordRejected.from_field_errors(field_errors(exc)) from None
