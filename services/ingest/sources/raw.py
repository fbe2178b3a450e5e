"""Raw provider responses (or just their `usage`), sent with attribution by the caller.

A record is either a provider response object as returned (`id`, `model`, `usage`, and
`created` / `created_at` when the provider gives a time) or an envelope
`{request_id, occurred_at, model, usage}`; either may add `team`, `feature`, `user`,
`virtual_key`, `tags`, `metadata` and `provider`. The request id is the provider's response id
unless `request_id` is given. Without a time (Anthropic responses carry none), arrival time is
used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time
from services.ingest.tokens import TokenParts

ATTRIBUTION = ("team", "feature", "user", "virtual_key", "tags")


def raw_draft(
    record: Any,
    source: str,
    provider: str,
    parts: Callable[[Mapping[str, Any], str], TokenParts],
) -> Draft:
    if not isinstance(record, Mapping):
        raise RecordRejected("(record)", "must be a JSON object")
    usage = record.get("usage")
    if not isinstance(usage, Mapping):
        raise RecordRejected("usage", "is required (the provider's usage object)")
    request_id = opt_str(record.get("request_id")) or opt_str(record.get("id"))
    if request_id is None:
        raise RecordRejected("request_id", "is required (or the response's id)")
    when = record.get("occurred_at") or record.get("created_at") or record.get("created")
    context: dict[str, Any] = {}
    flatten("metadata", record.get("metadata"), context)
    return Draft(
        source=source,
        source_request_id=request_id,
        occurred_at=parse_time(when, "occurred_at") if when else None,
        tokens=parts(usage, "usage"),
        provider=opt_str(record.get("provider")) or provider,
        request_model=opt_str(record.get("request_model")) or opt_str(record.get("model")),
        response_model=opt_str(record.get("model")),
        context=context,
        defaults={d: record.get(d) for d in ATTRIBUTION if record.get(d) is not None},
        tenant_claim=("tenant", record.get("tenant")),
    )
