"""What can go wrong at the ingest edge. Each error carries what a caller needs to act on it.

Mappers raise `RecordRejected` for one bad record; the batch goes on. The routes translate the
others to HTTP: `Unauthorized` → 401, `BadSignature` → 401, `PublishUnavailable` → 503;
`EventsTooLarge` turns into a rejection of each such record.
"""

from __future__ import annotations

from schemas.errors import AllotmentError, FieldError


class IngestError(AllotmentError):
    """Root of the ingest edge's errors."""


class RecordRejected(IngestError):
    """One record breaks a rule; `field` is a dotted path into the record as the source sent it."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")

    @classmethod
    def from_field_errors(cls, errors: list[FieldError]) -> RecordRejected:
        """The first broken rule stands for the record (the contract names them in order)."""
        first = errors[0] if errors else FieldError("(payload)", "is invalid")
        return cls(first.field, first.rule)


class Unauthorized(IngestError):
    """No ingest key, or one that matches no configured key."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BadSignature(IngestError):
    """A webhook body whose HMAC does not match the key's shared secret."""

    def __init__(self, header: str, reason: str) -> None:
        self.header = header
        self.reason = reason
        super().__init__(f"{header}: {reason}")


class BadPayload(IngestError):
    """The body as a whole cannot be read (not JSON, not protobuf, wrong top-level shape)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class BodyTooLarge(BadPayload):
    """The body exceeds the service's limit (413); split it into several requests."""


class EventsTooLarge(IngestError):
    """Events the usage topic cannot take even alone; every other event was acknowledged, so
    these are rejected by record (resending them could never succeed)."""

    def __init__(self, sizes: dict[str, int], limit: int) -> None:
        self.sizes = sizes
        self.limit = limit
        super().__init__(f"{len(sizes)} events larger than the usage topic takes ({limit} bytes)")


class PublishUnavailable(IngestError):
    """Kafka did not acknowledge the write; the caller must retry the whole request."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class IngestConfigError(IngestError):
    """The ingest keys file or environment is malformed; names the entry and the rule."""

    def __init__(self, where: str, rule: str) -> None:
        self.where = where
        self.rule = rule
        super().__init__(f"{where}: {rule}")
