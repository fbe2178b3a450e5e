"""Helicone: its webhook body, and the request rows of its export (`@helicone/export`).

Webhook (valhalla/jawn webhookSender): `request_id`, `user_id`, `request_body` and
`response_body` (strings, truncated past 10 KB), and with include-data `model`, `provider` and
`metadata` {cost, promptTokens, completionTokens, totalTokens, latencyMs}. The body is signed:
`Helicone-Signature` = hex HMAC-SHA256 of the raw body under the webhook's HMAC key (checked
by the route, not here). The webhook carries no time, so the arrival time stands in.

Exact tokens come from the provider's own `usage` in `response_body` when it parses (OpenAI,
Responses or Anthropic rules). Otherwise Helicone's counts are used: its body processors store
`promptTokens` WITHOUT cache reads (OpenAI: prompt_tokens - cached_tokens) and without cache
writes (Anthropic input_tokens), so the export's `prompt_tokens`, `prompt_cache_read_tokens`
and `prompt_cache_write_tokens` are already disjoint. The webhook's metadata has no cache
parts: when only it is available, a cached read cannot be separated and the prompt count is
recorded as uncached input.

Properties (`Helicone-Property-*`) arrive as `properties` / `request_properties` in the export
(and in the webhook when present); they are indexed as `property.<name>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, require_str, usd_to_micros
from services.ingest.tokens import TokenParts, count, provider_usage

SOURCE = "helicone"


def _response_usage(body: Any) -> Mapping[str, Any] | None:
    if isinstance(body, str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    if isinstance(body, Mapping) and isinstance(body.get("usage"), Mapping):
        usage: Mapping[str, Any] = body["usage"]
        return usage
    return None


def _tokens(record: Mapping[str, Any]) -> TokenParts:
    usage = _response_usage(record.get("response_body"))
    if usage is not None:
        return provider_usage(usage, "response_body.usage")
    if "prompt_tokens" in record or "completion_tokens" in record:  # export row
        return TokenParts(
            input_uncached=count(record.get("prompt_tokens"), "prompt_tokens"),
            cache_read=count(record.get("prompt_cache_read_tokens"), "prompt_cache_read_tokens"),
            cache_write=count(record.get("prompt_cache_write_tokens"), "prompt_cache_write_tokens"),
            output=count(record.get("completion_tokens"), "completion_tokens"),
        )
    metadata = record.get("metadata")
    if isinstance(metadata, Mapping) and (
        "promptTokens" in metadata or "completionTokens" in metadata
    ):
        return TokenParts(
            input_uncached=count(metadata.get("promptTokens"), "metadata.promptTokens"),
            output=count(metadata.get("completionTokens"), "metadata.completionTokens"),
        )
    raise RecordRejected("metadata.promptTokens", "is required when response_body carries no usage")


def to_draft(record: Any) -> Draft:
    if not isinstance(record, Mapping):
        raise RecordRejected("(record)", "must be a JSON object")
    request_id = require_str(record, "request_id")
    tokens = _tokens(record)
    properties = record.get("properties") or record.get("request_properties") or {}
    properties = properties if isinstance(properties, Mapping) else {}
    context: dict[str, Any] = {}
    flatten("property", properties, context)
    for name, value in properties.items():
        context.setdefault(f"header.helicone-property-{str(name).lower()}", value)
    metadata = record.get("metadata")
    cost = metadata.get("cost") if isinstance(metadata, Mapping) else None
    if cost is None:
        cost = record.get("costUSD")
    created = record.get("request_created_at") or record.get("created_at")
    for key in ("user_id", "request_user_id", "model", "provider"):
        if record.get(key) is not None:
            context[f"helicone.{key}"] = record[key]
    return Draft(
        source=SOURCE,
        source_request_id=request_id,
        occurred_at=parse_time(created, "request_created_at") if created else None,
        tokens=tokens,
        provider=opt_str(record.get("provider")),
        request_model=opt_str(record.get("request_model")) or opt_str(record.get("model")),
        response_model=opt_str(record.get("response_model")) or opt_str(record.get("model")),
        cost_micros=usd_to_micros(cost, "metadata.cost"),
        context=context,
        defaults={"user": record.get("user_id") or record.get("request_user_id")},
        properties={str(k): v for k, v in properties.items()},
    )
