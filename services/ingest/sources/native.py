"""Allotment's own record format: the `UsageRecorded` fields, minus what the edge decides.

A native record already uses disjoint token parts. The tenant comes from the ingest key (a
record may repeat it, and is rejected if it names another). The event id is derived from
`source` and `source_request_id` (or the sender's own `event_id`), scoped to the tenant, see
`scoped_event_id`. Attribution fields sent
explicitly are the defaults; an ingest key's attribution map may still pick them from the
record's `metadata` instead. Unknown fields are rejected, so a typo never drops a dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, require_str
from services.ingest.tokens import TokenParts, count

SOURCE = "native"

TOKEN_FIELDS = ("input_uncached", "cache_read", "cache_write", "output", "reasoning")
PASSTHROUGH = ("input_total", "total", "decision", "routed_from_model", "routed_to_model")
ATTRIBUTION = ("team", "feature", "user", "virtual_key", "tags")
KNOWN = frozenset(
    {
        "event_id",
        "source",
        "source_request_id",
        "occurred_at",
        "tenant",
        "provider",
        "request_model",
        "response_model",
        "cost_micros",
        "usage_status",
        "properties",
        "metadata",
        "type",
        "version",
        *TOKEN_FIELDS,
        *PASSTHROUGH,
        *ATTRIBUTION,
    }
)


def to_draft(record: Any) -> Draft:
    if not isinstance(record, dict | Mapping):  # dict first: the ABC check is slower
        raise RecordRejected("(record)", "must be a JSON object")
    if not KNOWN.issuperset(record):
        unknown = next(k for k in record if k not in KNOWN)
        raise RecordRejected(str(unknown), "is not a field of a native usage record")
    if record.get("type", "UsageRecorded") != "UsageRecorded":
        raise RecordRejected("type", "must be 'UsageRecorded' when given")
    source = record.get("source") or SOURCE
    if not isinstance(source, str):
        raise RecordRejected("source", "must be a string")
    event_id = opt_str(record.get("event_id"))
    if event_id is None or "source_request_id" in record:
        request_id = require_str(record, "source_request_id")
    else:
        request_id = event_id
    get = record.get
    tokens = TokenParts(
        count(get("input_uncached"), "input_uncached"),
        count(get("cache_read"), "cache_read"),
        count(get("cache_write"), "cache_write"),
        count(get("output"), "output"),
        count(get("reasoning"), "reasoning"),
    )
    context: dict[str, Any] = {}
    if "metadata" in record:
        flatten("metadata", record["metadata"], context)
    properties = get("properties") or {}
    if not isinstance(properties, Mapping):
        raise RecordRejected("properties", "must be a JSON object")
    if properties:
        flatten("property", properties, context)
    cost = record.get("cost_micros")
    return Draft(
        source=source,
        source_request_id=request_id,
        occurred_at=parse_time(record.get("occurred_at"), "occurred_at"),
        tokens=tokens,
        provider=opt_str(record.get("provider")),
        request_model=opt_str(record.get("request_model")),
        response_model=opt_str(record.get("response_model")),
        cost_micros=count(cost, "cost_micros") if cost is not None else None,
        usage_status=record.get("usage_status") or "reported",
        context=context,
        defaults={d: record[d] for d in ATTRIBUTION if d in record},
        properties=dict(properties),
        tenant_claim=("tenant", record.get("tenant")),
        event_id=event_id,
        extra={k: record[k] for k in PASSTHROUGH if k in record},
    )
