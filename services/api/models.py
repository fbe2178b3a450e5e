"""Request and response bodies of the API (they make its OpenAPI spec).

Every write carries a free-text `reason`, recorded on its event; writes to an existing budget
carry `expected_version`, the revision the writer last saw.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import BudgetId, Name, PositiveTokens, TenantId, UtcDatetime
from schemas.budgets import BudgetSpec, Metric

Reason = Field(min_length=1, max_length=2000, description="Why: recorded in the audit log.")


def _unstorable(text: str) -> bool:
    """NUL (PostgreSQL refuses it) or a lone surrogate (not Unicode text; no UTF-8 for it)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_text_at(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if _unstorable(value) else None
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        if any(_unstorable(str(k)) for k in value):
            return path or "(body)"
        items = [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value)]
    return next((p for key, v in items if (p := _bad_text_at(v, key)) is not None), None)


class _Body(BaseModel):
    """A request body. Text holding NUL or a lone surrogate is refused: PostgreSQL cannot
    store NUL, a surrogate has no UTF-8 form, and no name, id or reason needs either."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        where = _bad_text_at(data, "")
        if where is not None:
            raise ValueError(f"{where}: must be Unicode text without NUL or lone surrogates")
        return data


class CreateBudget(_Body):
    budget_id: BudgetId
    spec: BudgetSpec
    reason: str = Reason


class AmendBudget(_Body):
    expected_version: int = Field(ge=1)
    spec: BudgetSpec
    reason: str = Reason


class RetireBudget(_Body):
    expected_version: int = Field(ge=1)
    reason: str = Reason


class DrawOverflow(_Body):
    draw_id: Name = Field(description="Idempotency key of the draw, unique per tenant.")
    metric: Metric = "total"
    tokens: PositiveTokens
    reason: str = Reason


class MakeReservation(_Body):
    reservation_id: Name
    metric: Metric = "total"
    tokens: PositiveTokens
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    reason: str = Reason


class ReleaseReservation(_Body):
    reason: str = Reason


class SetRebalanceRule(_Body):
    enabled: bool = True
    at_fraction: float = Field(default=0.5, gt=0, lt=1)
    under_percent: int = Field(default=50, gt=0, le=100)
    share_percent: int = Field(default=50, gt=0, le=100)
    tenant_cap_tokens: int | None = Field(default=None, ge=0, le=10**15)
    reason: str = Reason


class RunRebalance(_Body):
    reason: str = Reason


class BudgetOut(BaseModel):
    budget_id: BudgetId
    tenant: TenantId
    version: int
    retired: bool
    spec: BudgetSpec


class TreeNode(BaseModel):
    budget_id: str
    name: str
    version: int
    limits: dict[str, int]
    children: list[TreeNode] = Field(default_factory=list)


class Tree(BaseModel):
    tenant: str
    roots: list[TreeNode]
    orphans: list[str] = Field(
        default_factory=list, description="Live budgets whose parent is not live."
    )


class PeriodRow(BaseModel):
    period_key: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    events: int


class Status(BaseModel):
    budget_id: str
    tenant: str
    revision: int
    retired: bool
    period_key: str
    period_start: datetime
    period_end: datetime
    limits: dict[str, int]
    effective_limits: dict[str, int]
    consumed: dict[str, int]
    remaining: dict[str, int]
    pool: dict[str, int] | None = Field(
        description="A parent's unallocated tokens (its overflow pool) in this period."
    )
    policy: dict[str, Any] | None
    forecast: dict[str, Any] | None
    history: list[PeriodRow]


class AuditEntry(BaseModel):
    occurred_at: datetime
    actor: str
    event_type: str
    budget_id: str | None
    revision: int | None
    reason: str
    event: dict[str, Any]


class DailyRow(BaseModel):
    day: date
    feature: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    events: int


class Accepted(BaseModel):
    """What a write published (after the broker acknowledged it)."""

    events: list[dict[str, Any]]


class ErrorItem(BaseModel):
    field: str
    rule: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)
