"""Raw OpenAI usage: Chat Completions (`prompt_tokens` ⊇ `cached_tokens`) and Responses
(`input_tokens` ⊇ `input_tokens_details.cached_tokens`, reasoning ⊂ `output_tokens`).

The shape is told by `object` ("chat.completion" / "response") or else by the usage keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ingest.sources.base import Draft
from services.ingest.sources.raw import raw_draft
from services.ingest.tokens import TokenParts, openai_chat, openai_responses

SOURCE = "openai"


def _parts_for(record: Mapping[str, Any]) -> Any:
    kind = record.get("object")
    usage = record.get("usage")
    if kind == "response" or (isinstance(usage, Mapping) and "input_tokens" in usage):
        return openai_responses
    return openai_chat


def to_draft(record: Any) -> Draft:
    def parts(usage: Mapping[str, Any], prefix: str) -> TokenParts:
        fn = _parts_for(record) if isinstance(record, Mapping) else openai_chat
        result: TokenParts = fn(usage, prefix)
        return result

    return raw_draft(record, SOURCE, "openai", parts)
