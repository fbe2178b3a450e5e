"""Ingest's reading of token counts: the shared provider conventions, with the reject policy.

Which count includes which (OpenAI's prompt/input totals include cached tokens, Anthropic's
input excludes both cache parts, reasoning is inside output) lives in
`services.common.token_conventions`, shared with the enforcement proxy. Sources whose counts
are not a provider's own usage object (OTel GenAI spans, LiteLLM and Bifrost rows) state their
rule in their mapper and build on `count` and `from_inclusive`.

Ingest's policy is to reject: a count that cannot be right (negative, a boolean, not a whole
number, cache parts larger than an inclusive total, reasoning larger than output) rejects the
record with `RecordRejected` naming the field and the rule; nothing is guessed. The proxy
clamps instead, because its upstream has already answered.
"""

from __future__ import annotations

from functools import partial
from typing import NoReturn

from services.common import token_conventions as conventions
from services.common.token_conventions import MAX_TOKENS, TokenParts
from services.ingest.errors import RecordRejected

__all__ = [
    "MAX_TOKENS",
    "TokenParts",
    "anthropic",
    "count",
    "from_inclusive",
    "openai_chat",
    "openai_responses",
    "provider_usage",
    "reject",
]


def reject(field: str, rule: str) -> NoReturn:
    """Ingest's policy for an impossible count: the record is rejected, the batch goes on."""
    raise RecordRejected(field, rule)


# The shared readers with ingest's policy bound; their signatures are otherwise the same.
count = partial(conventions.count, policy=reject)
from_inclusive = partial(conventions.from_inclusive, policy=reject)
openai_chat = partial(conventions.openai_chat, policy=reject)
openai_responses = partial(conventions.openai_responses, policy=reject)
anthropic = partial(conventions.anthropic, policy=reject)
provider_usage = partial(conventions.any_provider, policy=reject)
