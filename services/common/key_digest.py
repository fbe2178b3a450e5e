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


def claim_digest(holders: dict[str, str], digest: str, key_id: str) -> str | None:
    """Record that key `key_id` holds `digest`; the rule it breaks if another key already does.

    One secret, one key: if two entries shared a digest, whichever was read last would silently
    take the other's traffic (and bill its tenant). `holders` maps each digest seen so far to
    the id of the key holding it. Returns None when the digest is new (and records it), else
    the broken rule for the caller's own error, naming the key that holds it already.
    """
    other = holders.get(digest)
    if other is not None:
        return f"appears twice (also key {other!r})"
    holders[digest] = key_id
    return None
