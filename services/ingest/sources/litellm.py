"""LiteLLM's `StandardLoggingPayload`, as its generic API callback posts it.

The generic logger sends a JSON array (default), NDJSON or one object per request
(litellm/integrations/generic_api). Token convention: LiteLLM reports OpenAI-style usage, so
`prompt_tokens` INCLUDES cache reads and cache creation (its Anthropic transform adds both into
`prompt_tokens`). The cache parts and reasoning are in `metadata.usage_object`:
`cache_read_input_tokens` (or `prompt_tokens_details.cached_tokens`),
`cache_creation_input_tokens` and `completion_tokens_details.reasoning_tokens`.

A response LiteLLM served from its own cache (`cache_hit: true`) consumed no provider tokens:
it is recorded with zero tokens and the reported counts kept under `properties`.

Default attribution: team ← the key's team alias / id, user ← `end_user` (else the key's user),
virtual key ← the key alias / hash, tags ← `request_tags`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, require_str, usd_to_micros
from services.ingest.tokens import TokenParts, count, from_inclusive

SOURCE = "litellm"


def _usage_parts(record: Mapping[str, Any]) -> TokenParts:
    metadata = record.get("metadata") if isinstance(record.get("metadata"), Mapping) else {}
    usage = metadata.get("usage_object") if isinstance(metadata, Mapping) else None
    usage = usage if isinstance(usage, Mapping) else {}
    prompt_details = usage.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, Mapping) else {}
    completion_details = usage.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, Mapping) else {}
    base = "metadata.usage_object"
    if usage.get("cache_read_input_tokens") is not None:
        cache_read = count(usage["cache_read_input_tokens"], f"{base}.cache_read_input_tokens")
    else:
        cache_read = count(
            prompt_details.get("cached_tokens"), f"{base}.prompt_tokens_details.cached_tokens"
        )
    if usage.get("cache_creation_input_tokens") is not None:
        cache_write = count(
            usage["cache_creation_input_tokens"], f"{base}.cache_creation_input_tokens"
        )
    else:
        cache_write = count(
            prompt_details.get("cache_creation_tokens"),
            f"{base}.prompt_tokens_details.cache_creation_tokens",
        )
    return from_inclusive(
        count(record.get("prompt_tokens"), "prompt_tokens"),
        cache_read,
        cache_write,
        count(record.get("completion_tokens"), "completion_tokens"),
        count(
            completion_details.get("reasoning_tokens"),
            f"{base}.completion_tokens_details.reasoning_tokens",
        ),
        input_field="prompt_tokens",
        output_field="completion_tokens",
    )


def served_from_cache(tokens: TokenParts, properties: dict[str, Any]) -> TokenParts:
    """A response LiteLLM served from its own cache consumed no provider tokens.

    The counts it reported are kept under `properties`. The live payload and the SpendLogs
    backfill both come through here, so one request reads the same whichever path brought it.
    """
    properties["gateway_cache_hit"] = True
    properties["cached_response_tokens"] = tokens.as_fields()
    return TokenParts()


def to_draft(record: Any) -> Draft:
    if not isinstance(record, Mapping):
        raise RecordRejected("(record)", "must be a JSON object (a StandardLoggingPayload)")
    request_id = require_str(record, "id")
    metadata = record.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    tokens = _usage_parts(record)
    properties: dict[str, Any] = {}
    if record.get("cache_hit") is True:
        tokens = served_from_cache(tokens, properties)
    if record.get("status") not in (None, "success"):
        properties["status"] = str(record.get("status"))
    context: dict[str, Any] = {}
    flatten("metadata", metadata, context)
    flatten("header", metadata.get("requester_custom_headers"), context)
    for key, value in record.items():
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            context[f"litellm.{key.lower()}"] = value
    response = record.get("response")
    response_model = response.get("model") if isinstance(response, Mapping) else None
    return Draft(
        source=SOURCE,
        source_request_id=request_id,
        occurred_at=parse_time(record.get("startTime"), "startTime"),
        tokens=tokens,
        provider=opt_str(record.get("custom_llm_provider")),
        request_model=opt_str(record.get("model_group")) or opt_str(record.get("model")),
        response_model=opt_str(response_model) or opt_str(record.get("model")),
        cost_micros=usd_to_micros(record.get("response_cost"), "response_cost"),
        context=context,
        defaults={
            "team": metadata.get("user_api_key_team_alias")
            or metadata.get("user_api_key_team_id")
            or metadata.get("team_id"),
            "user": record.get("end_user")
            or metadata.get("user_api_key_end_user_id")
            or metadata.get("user_api_key_user_id"),
            "virtual_key": metadata.get("user_api_key_alias") or metadata.get("user_api_key_hash"),
            "tags": record.get("request_tags") or None,
        },
        properties=properties,
    )
