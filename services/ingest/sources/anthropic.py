"""Raw Anthropic Messages usage: `input_tokens` EXCLUDES `cache_read_input_tokens` and
`cache_creation_input_tokens`, so the three are the disjoint input parts as they stand.
"""

from __future__ import annotations

from typing import Any

from services.ingest.sources.base import Draft
from services.ingest.sources.raw import raw_draft
from services.ingest.tokens import anthropic

SOURCE = "anthropic"


def to_draft(record: Any) -> Draft:
    return raw_draft(record, SOURCE, "anthropic", anthropic)
