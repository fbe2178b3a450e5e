"""Ingest keys: each belongs to one tenant, and is stored only as the SHA-256 of its value.

The tenant of every record comes from the key that sent it, so a key can never write another
tenant's usage. Keys are configured in a YAML or JSON file (`ALLOTMENT_INGEST_KEYS_FILE`) or
inline JSON (`ALLOTMENT_INGEST_KEYS`):

    keys:
      - id: acme-gateway            # public name, also usable as ?key_id= for webhooks
        tenant: acme
        key_sha256: 9f86d08...      # `allotment ingest-key-hash <key>` prints it
        helicone_secret_env: ACME_HELICONE_HMAC   # the webhook's HMAC key (or helicone_secret)
        attribution:
          feature: [Helicone-Property-Feature]
          team: [metadata.team, header.x-team]

A Helicone webhook's HMAC key must be known in clear to verify a signature, so it is read
from an environment variable named in the file rather than written into it.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from services.common.key_digest import claim_digest, hash_key, is_key_digest
from services.ingest.attribution import AttributionMap
from services.ingest.errors import IngestConfigError

KEYS_FILE_ENV = "ALLOTMENT_INGEST_KEYS_FILE"
KEYS_INLINE_ENV = "ALLOTMENT_INGEST_KEYS"


@dataclass(frozen=True)
class IngestKey:
    """One tenant's credential and how its sources' metadata maps onto attribution."""

    key_id: str
    tenant: str
    key_sha256: str
    attribution: AttributionMap = field(default_factory=AttributionMap)
    helicone_secret: str | None = None


@dataclass(frozen=True)
class KeyRing:
    """Looks keys up by their hash (constant-time compare) or by their public id."""

    keys: tuple[IngestKey, ...]

    def __post_init__(self) -> None:
        seen_ids: set[str] = set()
        holders: dict[str, str] = {}
        for key in self.keys:
            if key.key_id in seen_ids:
                raise IngestConfigError(f"keys.{key.key_id}", "id is used twice")
            seen_ids.add(key.key_id)
            if (broken := claim_digest(holders, key.key_sha256, key.key_id)) is not None:
                raise IngestConfigError(f"keys.{key.key_id}.key_sha256", broken)

    def by_secret(self, presented: str) -> IngestKey | None:
        digest = hash_key(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.key_sha256, digest):
                found = key
        return found

    def by_id(self, key_id: str) -> IngestKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)


def _parse_key(raw: Any, where: str, environ: Mapping[str, str]) -> IngestKey:
    if not isinstance(raw, Mapping):
        raise IngestConfigError(where, "must be a mapping")
    for required in ("id", "tenant", "key_sha256"):
        if not isinstance(raw.get(required), str) or not raw[required]:
            raise IngestConfigError(f"{where}.{required}", "is required (a non-empty string)")
    digest = raw["key_sha256"].lower()
    if not is_key_digest(digest):
        raise IngestConfigError(f"{where}.key_sha256", "must be 64 hex digits (SHA-256)")
    secret = raw.get("helicone_secret")
    secret_env = raw.get("helicone_secret_env")
    if secret_env is not None:
        if not isinstance(secret_env, str) or secret_env not in environ:
            raise IngestConfigError(
                f"{where}.helicone_secret_env", f"names an unset variable ({secret_env!r})"
            )
        secret = environ[secret_env]
    if secret is not None and not isinstance(secret, str):
        raise IngestConfigError(f"{where}.helicone_secret", "must be a string")
    unknown = set(raw) - {
        "id",
        "tenant",
        "key_sha256",
        "helicone_secret",
        "helicone_secret_env",
        "attribution",
    }
    if unknown:
        raise IngestConfigError(where, f"unknown settings: {', '.join(sorted(unknown))}")
    return IngestKey(
        key_id=raw["id"],
        tenant=raw["tenant"],
        key_sha256=digest,
        attribution=AttributionMap.from_config(raw.get("attribution"), f"{where}.attribution"),
        helicone_secret=secret,
    )


def parse_keys(document: Any, environ: Mapping[str, str] | None = None) -> KeyRing:
    """Validate a loaded keys document (`{"keys": [...]}` or a bare list)."""
    env = os.environ if environ is None else environ
    entries = document.get("keys") if isinstance(document, Mapping) else document
    if not isinstance(entries, list):
        raise IngestConfigError("keys", "must be a list of key entries")
    return KeyRing(tuple(_parse_key(e, f"keys[{i}]", env) for i, e in enumerate(entries)))


def load_keys(environ: Mapping[str, str] | None = None) -> KeyRing:
    """Read the key ring from the environment at start-up (never at import)."""
    env = os.environ if environ is None else environ
    if env.get(KEYS_INLINE_ENV):
        try:
            return parse_keys(orjson.loads(env[KEYS_INLINE_ENV]), env)
        except orjson.JSONDecodeError as exc:
            raise IngestConfigError(KEYS_INLINE_ENV, f"is not JSON: {exc}") from None
    path = env.get(KEYS_FILE_ENV)
    if not path:
        raise IngestConfigError(KEYS_FILE_ENV, f"set it (or {KEYS_INLINE_ENV}) to configure keys")
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise IngestConfigError(path, f"cannot be read: {exc}") from None
    return parse_keys(document, env)
