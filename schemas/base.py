"""What every event on the wire shares: an explicit type name, a version, strict fields.

The wire name (`type`) and `version` are literals on each class, never derived from the class
name, so renaming a class never changes what is on the wire. Old versions are read through the
upcasters registered in `schemas.codec`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import FieldError, InvalidEvent

_NAMED_RULE = re.compile(r"^([A-Za-z_][\w.]*): (.+)$")
SCHEMA_ID_BASE = "https://allotment.dev/schemas/"


def require_utc(value: datetime) -> datetime:
    """The `UtcDatetime` rule (public: `schemas.usage.usage_fields` redoes it without the model)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset (naive timestamps are ambiguous)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(require_utc)]
"""A timestamp that must say its offset; it is normalised to UTC."""

Name = Annotated[str, Field(min_length=1, max_length=200)]
TenantId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
BudgetId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$")]
MAX_TOKENS = 10**15
NonNegativeTokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
PositiveTokens = Annotated[int, Field(gt=0, le=MAX_TOKENS)]


class Event(BaseModel):
    """Base of every versioned event. Subclasses set `TYPE`, `VERSION` and literal fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    @classmethod
    def schema_id(cls) -> str:
        return f"{SCHEMA_ID_BASE}{cls.TYPE}.v{cls.VERSION}.json"

    @classmethod
    def parse(cls, payload: dict[str, Any]) -> Any:
        """Validate a current-version payload, raising `InvalidEvent` that names each field."""
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise InvalidEvent(cls.TYPE, field_errors(exc)) from None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Turn pydantic's error list into (dotted field, rule) pairs a person can act on."""
    result = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"])
        rule = _rule_text(err)
        named = _NAMED_RULE.match(rule)
        if not path and named:
            path, rule = named.group(1), named.group(2)
        result.append(FieldError(field=path or "(payload)", rule=rule))
    return result


def _rule_text(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this event"
    message = str(err.get("msg", kind))
    return message.removeprefix("Value error, ")
