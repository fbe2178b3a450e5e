"""Rows of LiteLLM's `LiteLLM_SpendLogs` table (its proxy's schema.prisma), for backfill.

Columns read: `request_id`, `startTime` (timestamp without time zone, UTC), `model`,
`model_group`, `custom_llm_provider`, `spend` (USD), `prompt_tokens`, `completion_tokens`,
`user`, `end_user`, `team_id`, `api_key` (the virtual key's hash), `request_tags` (JSON list),
`cache_hit` ('True'/'False' text), `status` and `metadata` (JSON). LiteLLM writes the cache parts
into `metadata.additional_usage_values` (`cache_read_input_tokens`,
`cache_creation_input_tokens`, `completion_tokens_details.reasoning_tokens`), and `prompt_tokens`
INCLUDES both cache parts, as in the live payload.

`request_id` is the response id, the same id LiteLLM puts in the live payload's `id`, so a
request seen live and again in a backfill has one event id (source "litellm").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, require_str, usd_to_micros
from services.ingest.sources.litellm import SOURCE, served_from_cache
from services.ingest.tokens import TokenParts, count, from_inclusive


def _json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _tokens(row: Mapping[str, Any], extra: Mapping[str, Any]) -> TokenParts:
    details = extra.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    completion = extra.get("completion_tokens_details")
    completion = completion if isinstance(completion, Mapping) else {}
    base = "metadata.additional_usage_values"
    read = extra.get("cache_read_input_tokens")
    if read is None:
        read = details.get("cached_tokens")
    return from_inclusive(
        count(row.get("prompt_tokens"), "prompt_tokens"),
        count(read, f"{base}.cache_read_input_tokens"),
        count(extra.get("cache_creation_input_tokens"), f"{base}.cache_creation_input_tokens"),
        count(row.get("completion_tokens"), "completion_tokens"),
        count(completion.get("reasoning_tokens"), f"{base}.completion_tokens_details"),
        input_field="prompt_tokens",
        output_field="completion_tokens",
    )


def to_draft(row: Any) -> Draft:
    if not isinstance(row, Mapping):
        raise RecordRejected("(row)", "must be a row of LiteLLM_SpendLogs")
    request_id = require_str(row, "request_id")
    metadata = _json(row.get("metadata"))
    metadata = metadata if isinstance(metadata, Mapping) else {}
    extra = metadata.get("additional_usage_values")
    extra = extra if isinstance(extra, Mapping) else {}
    tokens = _tokens(row, extra)
    properties: dict[str, Any] = {}
    if str(row.get("cache_hit", "")).lower() == "true":
        tokens = served_from_cache(tokens, properties)
    if row.get("status") not in (None, "", "success"):
        properties["status"] = str(row["status"])
    context: dict[str, Any] = {}
    flatten("metadata", metadata, context)
    for key, value in row.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            context[f"litellm.{key.lower()}"] = value
    tags = _json(row.get("request_tags"))
    return Draft(
        source=SOURCE,
        source_request_id=request_id,
        occurred_at=parse_time(row.get("startTime"), "startTime", assume_utc=True),
        tokens=tokens,
        provider=opt_str(row.get("custom_llm_provider")),
        request_model=opt_str(row.get("model_group")) or opt_str(row.get("model")),
        response_model=opt_str(row.get("model")),
        cost_micros=usd_to_micros(row.get("spend"), "spend"),
        context=context,
        defaults={
            "team": metadata.get("user_api_key_team_alias") or row.get("team_id"),
            "user": row.get("end_user") or row.get("user"),
            "virtual_key": metadata.get("user_api_key_alias") or row.get("api_key"),
            "tags": tags if isinstance(tags, list) and tags else None,
        },
        properties=properties,
    )
