"""Budget configuration facts: defined, amended, retired.

A budget's whole configuration is its `BudgetSpec`; `BudgetDefined` and `BudgetAmended` both
carry the full spec, so a consumer never has to merge partial changes to know the current one.
`revision` counts the events of one budget (1 for the definition) and is the expected version
that writers check.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.base import BudgetId, Event, Name, PositiveTokens, TenantId, UtcDatetime

AtLimit = Literal["alert_only", "degrade_route", "hard_stop"]
PeriodKind = Literal["day", "week", "month", "rolling"]
Metric = Literal["input", "output", "total"]
Percent = Annotated[int, Field(gt=0, le=200)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(_Part):
    """Which usage a budget charges. An empty dimension matches anything.

    Within one dimension the values are alternatives; `tags` must all be present on the event.
    `model` matches the request's or the response's model.
    """

    team: list[Name] = Field(default_factory=list)
    feature: list[Name] = Field(default_factory=list)
    user: list[Name] = Field(default_factory=list)
    virtual_key: list[Name] = Field(default_factory=list)
    model: list[Name] = Field(default_factory=list)
    provider: list[Name] = Field(default_factory=list)
    tags: list[Name] = Field(default_factory=list)


class Limits(_Part):
    """Token limits per period; at least one must be set. Each is checked on its own."""

    input_tokens: PositiveTokens | None = None
    output_tokens: PositiveTokens | None = None
    total_tokens: PositiveTokens | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> Limits:
        if self.input_tokens is None and self.output_tokens is None and self.total_tokens is None:
            raise ValueError(
                "limits: set at least one of input_tokens, output_tokens, total_tokens"
            )
        return self

    def by_metric(self) -> dict[Metric, int]:
        pairs: list[tuple[Metric, int | None]] = [
            ("input", self.input_tokens),
            ("output", self.output_tokens),
            ("total", self.total_tokens),
        ]
        return {metric: limit for metric, limit in pairs if limit is not None}


class Period(_Part):
    """A calendar day/week/month in an IANA zone, or a rolling window of `window_days`.

    Weeks start on Monday (ISO 8601).
    """

    kind: PeriodKind = "month"
    timezone: str = "UTC"
    window_days: int | None = Field(default=None, ge=1, le=366)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"must be an IANA time zone name, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _window_for_rolling(self) -> Period:
        if self.kind == "rolling" and self.window_days is None:
            raise ValueError("period.window_days: is required for a rolling period")
        if self.kind != "rolling" and self.window_days is not None:
            raise ValueError("period.window_days: is only for rolling periods")
        return self


class Degrade(_Part):
    """How a route is demoted: to `target_model`, or per model through `model_map`.

    Demotion starts at `start_percent` (before the at-limit action), or as soon as the forecast
    projects an overrun when `on_projected_overrun` is set.
    """

    target_model: Name | None = None
    model_map: dict[str, Name] = Field(default_factory=dict)
    start_percent: Percent = 90
    on_projected_overrun: bool = False
    concise_prompt: bool = False
    cache_ttl_seconds: int | None = Field(default=None, gt=0)


class BudgetSpec(_Part):
    """Everything a user configures about one budget."""

    name: Name
    selector: Selector = Field(default_factory=Selector)
    limits: Limits
    period: Period = Field(default_factory=Period)
    thresholds: list[Percent] = Field(default_factory=lambda: [75, 90, 100], max_length=16)
    at_limit: AtLimit = "alert_only"
    degrade: Degrade | None = None
    parent: BudgetId | None = None
    overflow_cap_tokens: int | None = Field(default=None, ge=0)

    @field_validator("thresholds")
    @classmethod
    def _sorted_unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a percentage")
        return sorted(value)

    @model_validator(mode="after")
    def _degrade_has_target(self) -> BudgetSpec:
        degrade = self.degrade
        has_target = degrade is not None and (degrade.target_model or degrade.model_map)
        if self.at_limit == "degrade_route" and not has_target:
            raise ValueError(
                "degrade: degrade_route needs degrade.target_model or degrade.model_map"
            )
        return self


class _BudgetEvent(Event):
    budget_id: BudgetId
    tenant: TenantId
    revision: int = Field(ge=1)
    occurred_at: UtcDatetime
    actor: Name
    reason: str = Field(default="", max_length=2000)


class BudgetDefined(_BudgetEvent):
    """A budget came into being with `spec`; its revision is 1."""

    TYPE: ClassVar[str] = "BudgetDefined"
    VERSION: ClassVar[int] = 1
    type: Literal["BudgetDefined"] = "BudgetDefined"
    version: Literal[1] = 1
    spec: BudgetSpec


class BudgetAmended(_BudgetEvent):
    """The budget's configuration is now `spec` (the whole spec, not a patch)."""

    TYPE: ClassVar[str] = "BudgetAmended"
    VERSION: ClassVar[int] = 1
    type: Literal["BudgetAmended"] = "BudgetAmended"
    version: Literal[1] = 1
    spec: BudgetSpec


class BudgetRetired(_BudgetEvent):
    """The budget no longer charges usage; its history stays."""

    TYPE: ClassVar[str] = "BudgetRetired"
    VERSION: ClassVar[int] = 1
    type: Literal["BudgetRetired"] = "BudgetRetired"
    version: Literal[1] = 1
