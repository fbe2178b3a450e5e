"""Virtual keys: the bearer token a client presents, mapped to who pays for the request.

Keys are stored as SHA-256 hex digests only (`allotment proxy hash-key` makes one), so the key
file or environment never holds a usable secret. A request is attributed by hashing the token
it presents and looking the digest up.

File shape (YAML or JSON), or the same list as JSON in ALLOTMENT_PROXY_KEYS:

    keys:
      - id: support-bot            # the virtual_key recorded on usage events
        key_sha256: 9f86d0...      # sha256 hex of the secret
        tenant: acme
        team: support              # optional
        user: alice                # optional
        feature: copilot           # optional default feature
        tags: [prod]               # optional default tags
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from services.common.key_digest import claim_digest, hash_key, is_key_digest
from services.proxy.errors import ProxyConfigError

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class VirtualKey:
    """Who a virtual key bills: the attribution every request through it starts from."""

    key_id: str
    tenant: str
    team: str | None = None
    user: str | None = None
    feature: str | None = None
    tags: tuple[str, ...] = ()


class KeyStore:
    """Digest → VirtualKey. Lookups hash the presented token; nothing else is kept."""

    __slots__ = ("_by_digest",)

    def __init__(self, entries: dict[str, VirtualKey]) -> None:
        self._by_digest = entries

    def lookup(self, token: str) -> VirtualKey | None:
        return self._by_digest.get(hash_key(token))

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def from_entries(cls, entries: Any, origin: str) -> KeyStore:
        if isinstance(entries, dict):
            entries = entries.get("keys")
        if not isinstance(entries, list):
            raise ProxyConfigError(origin, "must be a list of keys (or {keys: [...]})")
        by_digest: dict[str, VirtualKey] = {}
        holders: dict[str, str] = {}
        for i, raw in enumerate(entries):
            where = f"{origin}.keys[{i}]"
            if not isinstance(raw, dict):
                raise ProxyConfigError(where, "must be a mapping")
            digest = str(raw.get("key_sha256", "")).lower()
            if not is_key_digest(digest):
                raise ProxyConfigError(f"{where}.key_sha256", "must be 64 hex digits (sha256)")
            tenant = raw.get("tenant")
            if not isinstance(tenant, str) or not _TENANT.match(tenant):
                raise ProxyConfigError(f"{where}.tenant", "is required (a tenant id)")
            key_id = raw.get("id")
            if not isinstance(key_id, str) or not 0 < len(key_id) <= 200:
                raise ProxyConfigError(f"{where}.id", "is required (a name, 1 to 200 characters)")
            if (broken := claim_digest(holders, digest, key_id)) is not None:
                raise ProxyConfigError(f"{where}.key_sha256", broken)
            tags = raw.get("tags") or []
            if not isinstance(tags, list) or not all(
                isinstance(t, str) and 0 < len(t) <= 200 for t in tags
            ):
                raise ProxyConfigError(f"{where}.tags", "must be a list of 1-200 character strings")
            by_digest[digest] = VirtualKey(
                key_id=key_id,
                tenant=tenant,
                team=_opt(raw, "team", where),
                user=_opt(raw, "user", where),
                feature=_opt(raw, "feature", where),
                tags=tuple(tags),
            )
        return cls(by_digest)

    @classmethod
    def load(cls, path: Path | None, inline_json: str | None) -> KeyStore:
        """Keys from a YAML/JSON file and/or a JSON string; both may be given."""
        sources: list[tuple[str, dict[str, VirtualKey]]] = []
        if path is not None:
            try:
                text = path.read_text()
            except OSError as exc:
                raise ProxyConfigError("keys_file", f"cannot read {path}: {exc}") from None
            sources.append(
                (str(path), cls.from_entries(_parse(text, str(path)), str(path))._by_digest)
            )
        if inline_json:
            try:
                data = orjson.loads(inline_json)
            except orjson.JSONDecodeError as exc:
                raise ProxyConfigError("ALLOTMENT_PROXY_KEYS", f"is not JSON: {exc}") from None
            sources.append(
                ("ALLOTMENT_PROXY_KEYS", cls.from_entries(data, "ALLOTMENT_PROXY_KEYS")._by_digest)
            )
        merged: dict[str, VirtualKey] = {}
        holders: dict[str, str] = {}
        for origin, keys in sources:  # one secret, one key: across the two sources as well
            for digest, key in keys.items():
                if (broken := claim_digest(holders, digest, key.key_id)) is not None:
                    raise ProxyConfigError(f"{origin}: key {key.key_id!r}.key_sha256", broken)
                merged[digest] = key
        return cls(merged)


def _parse(text: str, origin: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProxyConfigError(origin, f"is not YAML or JSON: {exc}") from None


def _opt(raw: dict[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ProxyConfigError(f"{where}.{name}", "must be a 1 to 200 character string when given")
    return value
