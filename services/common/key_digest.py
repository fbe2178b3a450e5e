"""How Allotment stores a bearer secret: as the SHA-256 hex digest of its text, never in clear.

Ingest keys, proxy virtual keys and API keys all follow this one rule, so a digest printed by
any `allotment ... hash` command fits any keys file, and a leaked keys file or table holds
nothing a client could present.
"""

from __future__ import annotations

import hashlib
import re

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def hash_key(secret: str) -> str:
    """The at-rest form of a presented secret (lower-case SHA-256 hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def is_key_digest(text: str) -> bool:
    """Whether `text` is an at-rest digest as `hash_key` writes it (64 lower-case hex digits)."""
    return _SHA256_HEX.fullmatch(text) is not None
