"""Each provider's token convention, mapped onto Allotment's disjoint parts: the one place.

Allotment's parts never overlap: `input_uncached + cache_read + cache_write = input_total`, and
`output` already includes `reasoning`. The providers disagree on what their "input" means:

- OpenAI Chat Completions: `prompt_tokens` INCLUDES `prompt_tokens_details.cached_tokens`; a
  cache write is not reported (0) except by some OpenAI-compatible gateways. Reasoning
  (`completion_tokens_details.reasoning_tokens`) is a subset of `completion_tokens`.
- OpenAI Responses: `input_tokens` INCLUDES `input_tokens_details.cached_tokens`;
  `output_tokens_details.reasoning_tokens` is a subset of `output_tokens`.
- Anthropic Messages: `input_tokens` EXCLUDES `cache_read_input_tokens` and
  `cache_creation_input_tokens`; the three add up to the input.

Both edges that read provider usage use these functions: the ingest edge (gateway logs) and the
enforcement proxy (upstream answers). They differ only in what to do with a count that cannot be
right (negative, a boolean, not a whole number, above `MAX_TOKENS`, cache parts larger than an
inclusive total, reasoning larger than output), so the caller passes that as `policy`:

- ingest passes a policy that raises, so the record is rejected naming the field and the rule;
- the proxy passes `clamp`, which returns: the upstream has already answered the client, and a
  repaired count is worth more than none. The repair is defined here, once: an unreadable or
  negative count is 0, one above `MAX_TOKENS` is `MAX_TOKENS`, cache parts are cut down to the
  inclusive total (cache read first), reasoning is cut down to output.

Pure: no I/O, no clock, nothing imported from a service. Field names for a policy are built only
when a rule is broken, so a good count costs one type check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from schemas.base import MAX_TOKENS

__all__ = [
    "MAX_TOKENS",
    "ZERO",
    "Policy",
    "TokenParts",
    "anthropic",
    "any_provider",
    "clamp",
    "count",
    "from_inclusive",
    "openai_chat",
    "openai_responses",
]

Policy = Callable[[str, str], None]
"""Called as `policy(field, rule)` when a count breaks a rule: raise to refuse the usage, or
return to accept this module's repair of it."""


def clamp(field: str, rule: str) -> None:
    """The lenient policy: accept the documented repair (for a caller that must record anyway)."""


class TokenParts(NamedTuple):
    """Disjoint token counts of one request, ready for `UsageRecorded` (a tuple: cheap to
    build on the hot path, immutable)."""

    input_uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def input_total(self) -> int:
        return self.input_uncached + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        return self.input_total + self.output

    def as_fields(self) -> dict[str, int]:
        return self._asdict()


ZERO = TokenParts()


def _name(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def count(value: Any, field: str, key: str = "", default: int = 0, *, policy: Policy) -> int:
    """A token count from JSON: an int, an integral float or a decimal string (OTLP JSON).

    `field` (joined with `key` by a dot, only when a rule is broken) names it for the policy;
    an absent count (`None`) is `default`.
    """
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, checked cheaply
        return value
    if value is None:
        return default
    if isinstance(value, bool):
        policy(_name(field, key), "must be a whole number of tokens, not a boolean")
        return 0
    if isinstance(value, int):
        result = value
    elif isinstance(value, float) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and value.strip().removeprefix("-").isdecimal():
        text = value.strip()
        digits = text.removeprefix("-").lstrip("0")
        if len(digits) > _MAX_DIGITS:  # int() would refuse past 4,300 digits anyway
            negative = text.startswith("-")
            policy(
                _name(field, key),
                f"must be {'>= 0' if negative else f'<= {MAX_TOKENS}'} "
                f"(got a {len(digits)}-digit number)",
            )
            return 0 if negative else MAX_TOKENS
        result = -int(digits or "0") if text.startswith("-") else int(digits or "0")
    else:
        policy(_name(field, key), f"must be a whole number of tokens (got {value!r})")
        return 0
    if result < 0:
        policy(_name(field, key), f"must be >= 0 (got {result})")
        return 0
    if result > MAX_TOKENS:
        policy(_name(field, key), f"must be <= {MAX_TOKENS} (got {result})")
        return MAX_TOKENS
    return result


_MAX_DIGITS = len(str(MAX_TOKENS))


def _get(obj: Any, key: str) -> Any:
    if type(obj) is dict:
        return obj.get(key)
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
    policy: Policy,
    prefix: str = "",
) -> TokenParts:
    """Split an input total that already contains its cache parts; reasoning is in output.

    The fields are named for the policy as `prefix.input_field` (just `input_field` without a
    prefix), and only when a rule is broken.
    """
    if cache_read + cache_write > input_total:
        policy(
            _name(prefix, input_field),
            f"must include its cache parts (cache read {cache_read} + cache write "
            f"{cache_write} > {input_total})",
        )
        cache_read = min(cache_read, input_total)
        cache_write = min(cache_write, input_total - cache_read)
    if reasoning > output:
        policy(
            _name(prefix, output_field), f"must include reasoning tokens ({reasoning} > {output})"
        )
        reasoning = output
    return TokenParts(
        input_total - cache_read - cache_write, cache_read, cache_write, output, reasoning
    )


def _detail(usage: Mapping[str, Any], name: str, key: str, prefix: str, policy: Policy) -> int:
    """A count one level down, such as `prompt_tokens_details.cached_tokens`."""
    value = _get(usage.get(name), key)
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # skip naming the field when it is fine
        return value
    return count(value, prefix, f"{name}.{key}", policy=policy)


def _openai(
    usage: Mapping[str, Any],
    names: tuple[str, str, str, str],
    write_keys: tuple[str, ...],
    prefix: str,
    policy: Policy,
) -> TokenParts:
    """OpenAI's one rule under either API's names: the input total includes the cached tokens
    in its details, and the reasoning tokens in the output's details are inside the output."""
    input_key, input_details, output_key, output_details = names
    cache_write = 0
    for key in write_keys:  # the first one given counts
        if _get(usage.get(input_details), key):
            cache_write = _detail(usage, input_details, key, prefix, policy)
            break
    return from_inclusive(
        count(usage.get(input_key), prefix, input_key, policy=policy),
        _detail(usage, input_details, "cached_tokens", prefix, policy),
        cache_write,
        count(usage.get(output_key), prefix, output_key, policy=policy),
        _detail(usage, output_details, "reasoning_tokens", prefix, policy),
        input_field=input_key,
        output_field=output_key,
        policy=policy,
        prefix=prefix,
    )


_CHAT = ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details")
_RESPONSES = ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details")


def openai_chat(usage: Mapping[str, Any], prefix: str = "usage", *, policy: Policy) -> TokenParts:
    """OpenAI Chat Completions (and embeddings) `usage`: cached_tokens is inside prompt_tokens.

    Some OpenAI-compatible gateways report a cache write in the prompt details, also inside.
    """
    return _openai(usage, _CHAT, ("cache_write_tokens", "cache_creation_tokens"), prefix, policy)


def openai_responses(
    usage: Mapping[str, Any], prefix: str = "usage", *, policy: Policy
) -> TokenParts:
    """OpenAI Responses `usage`: input_tokens includes input_tokens_details.cached_tokens."""
    return _openai(usage, _RESPONSES, (), prefix, policy)


def anthropic(
    usage: Mapping[str, Any], prefix: str = "usage", base: TokenParts = ZERO, *, policy: Policy
) -> TokenParts:
    """Anthropic Messages `usage`: input_tokens excludes both cache parts; they add up.

    A count that is absent or null keeps its value from `base`. A stream's `message_delta`
    repeats only what changed, cumulatively: pass the parts so far as `base` and the last
    value wins; the deltas are never added up.
    """
    get = usage.get
    return TokenParts(
        count(get("input_tokens"), prefix, "input_tokens", base.input_uncached, policy=policy),
        count(
            get("cache_read_input_tokens"),
            prefix,
            "cache_read_input_tokens",
            base.cache_read,
            policy=policy,
        ),
        count(
            get("cache_creation_input_tokens"),
            prefix,
            "cache_creation_input_tokens",
            base.cache_write,
            policy=policy,
        ),
        count(get("output_tokens"), prefix, "output_tokens", base.output, policy=policy),
        base.reasoning,
    )


def any_provider(usage: Mapping[str, Any], prefix: str = "usage", *, policy: Policy) -> TokenParts:
    """Recognise a raw provider usage object by its keys and apply that provider's rule.

    Anthropic is told apart from OpenAI Responses (both say `input_tokens`) by its cache keys
    or the absence of `input_tokens_details`; pass the shape explicitly when you know it.
    Usage without any count breaks a rule too; the lenient repair is zero tokens.
    """
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return openai_chat(usage, prefix, policy=policy)
    if "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return anthropic(usage, prefix, policy=policy)
    if "input_tokens_details" in usage or "output_tokens_details" in usage:
        return openai_responses(usage, prefix, policy=policy)
    if "input_tokens" in usage or "output_tokens" in usage:
        # Neither cache key nor details: both conventions give the same parts.
        return anthropic(usage, prefix, policy=policy)
    policy(prefix, "has no token counts (prompt_tokens or input_tokens)")
    return ZERO
