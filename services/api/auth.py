"""API keys: roles scoped to tenants, stored as hashes, never logged.

A key reads `alk_<key_id>_<secret>`. Only SHA-256 of the whole key is stored (the secret has 256
bits of entropy, so a slow hash buys nothing); the key id finds the row, and the hashes are
compared in constant time. The plaintext is shown once, when the key is created.

Roles: `admin` reads and writes every tenant; `tenant-admin` reads and writes its tenants;
`viewer` reads its tenants. A key's `principal` is the actor recorded on every event it writes.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine, select

from schemas.errors import AllotmentError
from services.common.key_digest import hash_key
from services.warehouse import tables as t

Role = Literal["admin", "tenant-admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "tenant-admin", "viewer")
PREFIX = "alk"


class Unauthenticated(AllotmentError):
    """No key, a malformed key, an unknown key or a revoked key (one answer for all: 401)."""

    def __init__(self) -> None:
        super().__init__("authorization: a valid API key is required (Authorization: Bearer ...)")


class Forbidden(AllotmentError):
    """The key is valid but its role or its tenants do not cover the request."""

    def __init__(self, principal: str, action: str, tenant: str) -> None:
        self.principal = principal
        self.action = action
        self.tenant = tenant
        super().__init__(f"{principal!r} may not {action} tenant {tenant!r}")


class UnknownRole(AllotmentError):
    """A key was asked for with a role that does not exist."""

    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__(f"role: must be one of {', '.join(ROLES)}, got {role!r}")


class InvalidPrincipal(AllotmentError):
    """A key's principal becomes the actor of events: 1 to 200 characters, no NUL."""

    def __init__(self, principal: str) -> None:
        self.principal = principal
        super().__init__("principal: must be 1 to 200 characters without NUL")


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: Role
    tenants: frozenset[str]

    def can_read(self, tenant: str) -> bool:
        return self.role == "admin" or tenant in self.tenants

    def can_write(self, tenant: str) -> bool:
        return self.role == "admin" or (self.role == "tenant-admin" and tenant in self.tenants)


def create_key(
    engine: Engine, principal: str, role: Role, tenants: list[str], now: datetime | None = None
) -> str:
    """Store a new key's hash and return the plaintext key (shown once, never stored)."""
    if role not in ROLES:
        raise UnknownRole(role)
    if not 1 <= len(principal) <= 200 or "\x00" in principal:
        # The principal is the `actor` of every event the key writes (a Name: 1-200 chars).
        raise InvalidPrincipal(principal)
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with engine.begin() as conn:
        conn.execute(
            t.api_keys.insert().values(
                key_id=key_id,
                key_hash=hash_key(key),
                principal=principal,
                role=role,
                tenants=sorted(tenants),
                created_at=now or datetime.now(UTC),
            )
        )
    return key


def authenticate(engine: Engine, key: str | None) -> Principal:
    """The principal of `key`; raises `Unauthenticated` without saying which check failed."""
    parts = (key or "").split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise Unauthenticated()
    with engine.connect() as conn:
        row = (
            conn.execute(select(t.api_keys).where(t.api_keys.c.key_id == parts[1]))
            .mappings()
            .first()
        )
    if row is None or row["revoked_at"] is not None:
        raise Unauthenticated()
    if not hmac.compare_digest(row["key_hash"], hash_key(key or "")):
        raise Unauthenticated()
    return Principal(row["key_id"], row["principal"], row["role"], frozenset(row["tenants"]))


def revoke_key(engine: Engine, key_id: str, now: datetime | None = None) -> bool:
    """Revoke a key by its id (the part after `alk_`); returns whether a live key was revoked."""
    with engine.begin() as conn:
        result = conn.execute(
            t.api_keys.update()
            .where(t.api_keys.c.key_id == key_id, t.api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(UTC))
        )
    return bool(result.rowcount)
