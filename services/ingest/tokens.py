"""Each source's token convention, translated exactly onto Allotment's disjoint parts.

Allotment's parts never overlap: `input_uncached + cache_read + cache_write = input_total`, and
`output` already includes `reasoning`. The sources disagree on what their "input" means:

- OpenAI Chat Completions: `prompt_tokens` INCLUDES `prompt_tokens_details.cached_tokens`; a
  cache write is not reported (0). Reasoning is a subset of `completion_tokens`.
- OpenAI Responses: `input_tokens` INCLUDES `input_tokens_details.cached_tokens`;
  `output_tokens_details.reasoning_tokens` is a subset of `output_tokens`.
- Anthropic Messages: `input_tokens` EXCLUDES `cache_read_input_tokens` and
  `cache_creation_input_tokens`; the three add up to the input.
- OpenTelemetry GenAI (`gen_ai.usage.input_tokens`) and OpenInference / traceAI
  (`llm.token_count.prompt`): the input INCLUDES cache reads and cache creation.

A count that cannot be right (negative, not a whole number, or cache parts larger than an
inclusive total) rejects the record with the field and the rule; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from services.ingest.errors import RecordRejected

MAX_TOKENS = 10**15


class TokenParts(NamedTuple):
    """Disjoint token counts of one request, ready for `UsageRecorded` (a tuple: cheap to
    build on the hot path, immutable)."""

    input_uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    def as_fields(self) -> dict[str, int]:
        return self._asdict()


def count(value: Any, field: str) -> int:
    """A token count from JSON: an int, an integral float or a decimal string (OTLP JSON)."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, checked cheaply
        return value
    if value is None:
        return 0
    if isinstance(value, bool):
        raise RecordRejected(field, "must be a whole number of tokens, not a boolean")
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        result = int(value.strip())
    else:
        raise RecordRejected(field, f"must be a whole number of tokens (got {value!r})")
    if result < 0:
        raise RecordRejected(field, f"must be >= 0 (got {result})")
    if result > MAX_TOKENS:
        raise RecordRejected(field, f"must be <= {MAX_TOKENS} (got {result})")
    return result


def _get(obj: Mapping[str, Any] | None, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def from_inclusive(
    input_total: int,
    cache_read: int,
    cache_write: int,
    output: int,
    reasoning: int,
    *,
    input_field: str,
    output_field: str,
) -> TokenParts:
    """Split an input total that already contains its cache parts; reasoning is in output."""
    if cache_read + cache_write > input_total:
        raise RecordRejected(
            input_field,
            f"must include its cache parts (cache read {cache_read} + cache write "
            f"{cache_write} > {input_total})",
        )
    if reasoning > output:
        raise RecordRejected(
            output_field, f"must include reasoning tokens ({reasoning} > {output})"
        )
    return TokenParts(
        input_uncached=input_total - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=output,
        reasoning=reasoning,
    )


def openai_chat(usage: Mapping[str, Any], prefix: str = "usage") -> TokenParts:
    """OpenAI Chat Completions `usage`: cached_tokens is a subset of prompt_tokens."""
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    return from_inclusive(
        count(usage.get("prompt_tokens"), f"{prefix}.prompt_tokens"),
        count(
            _get(prompt_details, "cached_tokens"),
            f"{prefix}.prompt_tokens_details.cached_tokens",
        ),
        # Some OpenAI-compatible gateways report a cache write inside the details.
        count(
            _get(prompt_details, "cache_write_tokens")
            or _get(prompt_details, "cache_creation_tokens"),
            f"{prefix}.prompt_tokens_details.cache_write_tokens",
        ),
        count(usage.get("completion_tokens"), f"{prefix}.completion_tokens"),
        count(
            _get(completion_details, "reasoning_tokens"),
            f"{prefix}.completion_tokens_details.reasoning_tokens",
        ),
        input_field=f"{prefix}.prompt_tokens",
        output_field=f"{prefix}.completion_tokens",
    )


def openai_responses(usage: Mapping[str, Any], prefix: str = "usage") -> TokenParts:
    """OpenAI Responses `usage`: input_tokens includes input_tokens_details.cached_tokens."""
    return from_inclusive(
        count(usage.get("input_tokens"), f"{prefix}.input_tokens"),
        count(
            _get(usage.get("input_tokens_details"), "cached_tokens"),
            f"{prefix}.input_tokens_details.cached_tokens",
        ),
        0,
        count(usage.get("output_tokens"), f"{prefix}.output_tokens"),
        count(
            _get(usage.get("output_tokens_details"), "reasoning_tokens"),
            f"{prefix}.output_tokens_details.reasoning_tokens",
        ),
        input_field=f"{prefix}.input_tokens",
        output_field=f"{prefix}.output_tokens",
    )


def anthropic(usage: Mapping[str, Any], prefix: str = "usage") -> TokenParts:
    """Anthropic Messages `usage`: input_tokens excludes both cache parts; they add up."""
    return TokenParts(
        input_uncached=count(usage.get("input_tokens"), f"{prefix}.input_tokens"),
        cache_read=count(usage.get("cache_read_input_tokens"), f"{prefix}.cache_read_input_tokens"),
        cache_write=count(
            usage.get("cache_creation_input_tokens"), f"{prefix}.cache_creation_input_tokens"
        ),
        output=count(usage.get("output_tokens"), f"{prefix}.output_tokens"),
    )


def provider_usage(usage: Mapping[str, Any], prefix: str = "usage") -> TokenParts:
    """Recognise a raw provider usage object by its keys and apply that provider's rule.

    Anthropic is told apart from OpenAI Responses (both say `input_tokens`) by its cache keys
    or the absence of `input_tokens_details`; pass the shape explicitly when you know it.
    """
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return openai_chat(usage, prefix)
    anthropic_keys = ("cache_read_input_tokens", "cache_creation_input_tokens")
    if any(k in usage for k in anthropic_keys):
        return anthropic(usage, prefix)
    if "input_tokens_details" in usage or "output_tokens_details" in usage:
        return openai_responses(usage, prefix)
    if "input_tokens" in usage or "output_tokens" in usage:
        # Neither cache key nor details: both conventions give the same parts.
        return anthropic(usage, prefix)
    raise RecordRejected(prefix, "has no token counts (prompt_tokens or input_tokens)")
