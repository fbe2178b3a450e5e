"""Portkey log export records (its Logs Export JSONL).

Documented columns: `created_at`, `request.body`, `response.body`, `is_success`, `ai_org`
(provider), `ai_model`, `req_units`, `res_units`, `total_units`, `cost` (in CENTS of USD),
`cost_currency`, `metadata`, `trace_id`, ... The export may nest `request`/`response` or keep the
dotted column names; both are read. The request id is `id` (or `request_id`/`log_id`), else
the provider's response id, else the span, else a digest of the record.

Exact tokens come from the provider `usage` in the response body. Portkey stores the body
it answered with, which for `/chat/completions` is OpenAI-shaped whatever the provider, with
each provider transform's own rule for what `prompt_tokens` holds (read from
Portkey-AI/gateway src/providers/*/chatComplete.ts):

- anthropic: `prompt_tokens` EXCLUDES the cache parts, which are top-level
  `cache_read_input_tokens` / `cache_creation_input_tokens`; a native Messages body
  (`input_tokens`, via `/messages`) is read with Anthropic's own rule;
- bedrock: `prompt_tokens` INCLUDES both cache parts, the same top-level keys name them;
- others: recognised by their keys (OpenAI's rule for `prompt_tokens`).

Without a body, `req_units`/`res_units` are used as uncached input and output: Portkey's units
carry no cache breakdown.

Default attribution: user ← `metadata._user` (Portkey's reserved user key), virtual key ←
`virtual_key`; everything in `metadata` is available as `metadata.<key>`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, usd_to_micros
from services.ingest.tokens import TokenParts, anthropic, count, from_inclusive, provider_usage

SOURCE = "portkey"


def _body(record: Mapping[str, Any], side: str) -> Any:
    nested = record.get(side)
    body = nested.get("body") if isinstance(nested, Mapping) else record.get(f"{side}.body")
    if isinstance(body, str):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    return body


USAGE = "response.body.usage"


def _unified_anthropic(usage: Mapping[str, Any]) -> TokenParts:
    """Portkey's OpenAI-shaped usage of an Anthropic call (AnthropicChatCompleteResponseTransform):
    `prompt_tokens` is Anthropic's `input_tokens` (cache EXCLUDED), `completion_tokens` its
    output, and the cache parts stay at the top level (only when not zero)."""
    return TokenParts(
        input_uncached=count(usage.get("prompt_tokens"), USAGE, "prompt_tokens"),
        cache_read=count(usage.get("cache_read_input_tokens"), USAGE, "cache_read_input_tokens"),
        cache_write=count(
            usage.get("cache_creation_input_tokens"), USAGE, "cache_creation_input_tokens"
        ),
        output=count(usage.get("completion_tokens"), USAGE, "completion_tokens"),
    )


def _bedrock(usage: Mapping[str, Any]) -> TokenParts:
    """Portkey's usage of a Bedrock Converse call: `prompt_tokens` INCLUDES both cache parts
    (inputTokens + cacheRead + cacheWrite); the read is also in
    `prompt_tokens_details.cached_tokens` (not in streamed answers), and both parts are at the
    top level when not zero."""
    details = usage.get("prompt_tokens_details")
    read_key = "cache_read_input_tokens"
    read = usage.get(read_key)
    if isinstance(details, Mapping) and details.get("cached_tokens") is not None:
        read_key, read = "prompt_tokens_details.cached_tokens", details["cached_tokens"]
    return from_inclusive(
        count(usage.get("prompt_tokens"), USAGE, "prompt_tokens"),
        count(read, USAGE, read_key),
        count(usage.get("cache_creation_input_tokens"), USAGE, "cache_creation_input_tokens"),
        count(usage.get("completion_tokens"), USAGE, "completion_tokens"),
        0,
        input_field="prompt_tokens",
        output_field="completion_tokens",
        prefix=USAGE,
    )


def _tokens(record: Mapping[str, Any]) -> TokenParts:
    response = _body(record, "response")
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if isinstance(usage, Mapping):
        provider = str(record.get("ai_org", "")).lower()
        openai_shaped = "prompt_tokens" in usage or "completion_tokens" in usage
        if provider == "anthropic":
            return _unified_anthropic(usage) if openai_shaped else anthropic(usage, USAGE)
        if provider == "bedrock" and openai_shaped:
            return _bedrock(usage)
        return provider_usage(usage, USAGE)
    if "req_units" not in record and "res_units" not in record:
        raise RecordRejected("req_units", "is required when response.body carries no usage")
    return TokenParts(
        input_uncached=count(record.get("req_units"), "req_units"),
        output=count(record.get("res_units"), "res_units"),
    )


def _request_id(record: Mapping[str, Any]) -> str:
    """The log's id; the export's documented columns may not include one, so fall back to the
    provider's response id, the span, and last to a digest of the whole record (the same row
    exported twice is then still one event)."""
    for key in ("id", "request_id", "log_id"):
        if record.get(key):
            return str(record[key])
    response = _body(record, "response")
    if isinstance(response, Mapping) and isinstance(response.get("id"), str) and response["id"]:
        return f"response:{response['id']}"
    if record.get("trace_id") and record.get("span_id"):
        return f"span:{record['trace_id']}/{record['span_id']}"
    digest = hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"sha256:{digest}"


def to_draft(record: Any) -> Draft:
    if not isinstance(record, Mapping):
        raise RecordRejected("(record)", "must be a JSON object")
    request_id = _request_id(record)
    metadata = record.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            metadata = None
    metadata = metadata if isinstance(metadata, Mapping) else {}
    context: dict[str, Any] = {}
    flatten("metadata", metadata, context)
    for key in ("trace_id", "virtual_key", "config", "prompt_slug", "workspace_slug"):
        if record.get(key) is not None:
            context[f"portkey.{key}"] = record[key]
    request = _body(record, "request")
    response = _body(record, "response")
    properties: dict[str, Any] = {}
    if str(record.get("is_success", "1")) in ("0", "false", "False"):
        properties["status"] = "failure"
    return Draft(
        source=SOURCE,
        source_request_id=request_id,
        occurred_at=parse_time(record.get("created_at"), "created_at", assume_utc=True),
        tokens=_tokens(record),
        provider=opt_str(record.get("ai_org")),
        request_model=opt_str(request.get("model") if isinstance(request, Mapping) else None)
        or opt_str(record.get("ai_model")),
        response_model=opt_str(response.get("model") if isinstance(response, Mapping) else None)
        or opt_str(record.get("ai_model")),
        cost_micros=usd_to_micros(record.get("cost"), "cost", scale=0.01),
        context=context,
        defaults={"user": metadata.get("_user"), "virtual_key": record.get("virtual_key")},
        properties=properties,
    )
