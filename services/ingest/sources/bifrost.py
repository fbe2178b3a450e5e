"""Bifrost log records (framework/logstore `Log`, as its logs API returns them).

Fields used: `id`, `timestamp` (RFC 3339), `provider`, `model`, `alias`, `status`
("success" | "error" | "processing"), `cost` (USD), `token_usage` (Bifrost's OpenAI-shaped
`LLMUsage`: `prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_read_tokens` /
`cached_write_tokens`, `completion_tokens_details.reasoning_tokens`), the governance fields
`virtual_key_id`/`virtual_key_name`, `team_id`/`team_name`, `user_id`, `customer_id`, and
`metadata`. When `token_usage` is absent, the denormalised columns `prompt_tokens`,
`completion_tokens` and `cached_read_tokens` are read instead.

Convention: OpenAI's, so `prompt_tokens` INCLUDES the cached read and write parts. A log still
`processing` has no final usage and is rejected, so that the final record is the one counted.

Default attribution: team ← team name (else id), user ← `user_id`, virtual key ← the virtual
key's name (else id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.attribution import flatten
from services.ingest.errors import RecordRejected
from services.ingest.sources.base import Draft, opt_str, parse_time, require_str, usd_to_micros
from services.ingest.tokens import TokenParts, count, from_inclusive

SOURCE = "bifrost"


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def _tokens(record: Mapping[str, Any]) -> TokenParts:
    usage = record.get("token_usage")
    if isinstance(usage, Mapping):
        prompt = _details(usage, "prompt_tokens_details")
        completion = _details(usage, "completion_tokens_details")
        base = "token_usage"
        read_key = "cached_read_tokens" if "cached_read_tokens" in prompt else "cached_tokens"
        return from_inclusive(
            count(usage.get("prompt_tokens"), f"{base}.prompt_tokens"),
            count(prompt.get(read_key), f"{base}.prompt_tokens_details.{read_key}"),
            count(
                prompt.get("cached_write_tokens"),
                f"{base}.prompt_tokens_details.cached_write_tokens",
            ),
            count(usage.get("completion_tokens"), f"{base}.completion_tokens"),
            count(
                completion.get("reasoning_tokens"),
                f"{base}.completion_tokens_details.reasoning_tokens",
            ),
            input_field=f"{base}.prompt_tokens",
            output_field=f"{base}.completion_tokens",
        )
    if "prompt_tokens" not in record and "completion_tokens" not in record:
        raise RecordRejected("token_usage", "is required (or prompt_tokens/completion_tokens)")
    return from_inclusive(
        count(record.get("prompt_tokens"), "prompt_tokens"),
        count(record.get("cached_read_tokens"), "cached_read_tokens"),
        0,
        count(record.get("completion_tokens"), "completion_tokens"),
        0,
        input_field="prompt_tokens",
        output_field="completion_tokens",
    )


def to_draft(record: Any) -> Draft:
    if not isinstance(record, Mapping):
        raise RecordRejected("(record)", "must be a JSON object")
    request_id = require_str(record, "id")
    status = record.get("status")
    if status == "processing":
        raise RecordRejected("status", "must be final ('success' or 'error'), not 'processing'")
    metadata = record.get("metadata")
    context: dict[str, Any] = {}
    flatten("metadata", metadata if isinstance(metadata, Mapping) else None, context)
    for key in (
        "virtual_key_id",
        "virtual_key_name",
        "team_id",
        "team_name",
        "user_id",
        "customer_id",
        "customer_name",
        "business_unit_id",
        "selected_key_name",
        "routing_rule_name",
    ):
        if record.get(key) is not None:
            context[f"bifrost.{key}"] = record[key]
    properties: dict[str, Any] = {}
    if status not in (None, "success"):
        properties["status"] = str(status)
    return Draft(
        source=SOURCE,
        source_request_id=request_id,
        occurred_at=parse_time(record.get("timestamp"), "timestamp"),
        tokens=_tokens(record),
        provider=opt_str(record.get("provider")),
        request_model=opt_str(record.get("alias")) or opt_str(record.get("model")),
        response_model=opt_str(record.get("model")),
        cost_micros=usd_to_micros(record.get("cost"), "cost"),
        context=context,
        defaults={
            "team": record.get("team_name") or record.get("team_id"),
            "user": record.get("user_id"),
            "virtual_key": record.get("virtual_key_name") or record.get("virtual_key_id"),
        },
        properties=properties,
    )
