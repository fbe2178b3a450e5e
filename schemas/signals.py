"""What the pipeline concludes about a budget: crossings, policies, forecasts, dead letters."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import BudgetId, Event, Name, NonNegativeTokens, TenantId, UtcDatetime
from schemas.budgets import AtLimit, Metric

Policy = Literal["allow", "alert_only", "degrade_route", "hard_stop"]
"""`allow` is the state below every line; the others are the at-limit actions in force."""


class Band(BaseModel):
    """A central interval of projected period-end consumption."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float


class Projection(BaseModel):
    """Projected period-end consumption for one metric, with its 80 and 95 percent bands."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: Metric
    p50: float
    band80: Band
    band95: Band
    method: Name
    as_of: UtcDatetime


class ThresholdCrossed(Event):
    """A budget's consumption reached `threshold` percent of its effective limit in a period.

    Emitted exactly once per (budget_id, period_key, metric, threshold), also under replay.
    """

    TYPE: ClassVar[str] = "ThresholdCrossed"
    VERSION: ClassVar[int] = 1
    type: Literal["ThresholdCrossed"] = "ThresholdCrossed"
    version: Literal[1] = 1

    tenant: TenantId
    budget_id: BudgetId
    period_key: Name
    period_start: UtcDatetime
    period_end: UtcDatetime
    metric: Metric
    threshold: int = Field(gt=0, le=200)
    consumed: NonNegativeTokens
    limit: NonNegativeTokens
    effective_limit: NonNegativeTokens
    crossed_at: UtcDatetime
    projection: Projection | None = None
    trend_vs_prev_7d: float | None = None
    recommended_action: str = ""


class PolicyChanged(Event):
    """The routing policy in force for a budget changed. Latest per budget wins (compacted).

    `reset_at` is the budget's next period reset; the proxy derives Retry-After from it.
    """

    TYPE: ClassVar[str] = "PolicyChanged"
    VERSION: ClassVar[int] = 1
    type: Literal["PolicyChanged"] = "PolicyChanged"
    version: Literal[1] = 1

    tenant: TenantId
    budget_id: BudgetId
    period_key: Name
    policy: Policy
    at_limit: AtLimit
    reason: str
    effective_at: UtcDatetime
    reset_at: UtcDatetime | None
    metric: Metric | None = None
    consumed: NonNegativeTokens = 0
    limit: NonNegativeTokens = 0
    remaining: int = 0
    target_model: Name | None = None
    model_map: dict[str, Name] = Field(default_factory=dict)
    concise_prompt: bool = False
    cache_ttl_seconds: int | None = None


class ForecastUpdated(Event):
    """A fresh projection of a budget's period-end consumption, one per limited metric."""

    TYPE: ClassVar[str] = "ForecastUpdated"
    VERSION: ClassVar[int] = 1
    type: Literal["ForecastUpdated"] = "ForecastUpdated"
    version: Literal[1] = 1

    tenant: TenantId
    budget_id: BudgetId
    period_key: Name
    period_end: UtcDatetime
    as_of: UtcDatetime
    days_of_history: int = Field(ge=0)
    projections: list[Projection] = Field(min_length=1)


class DeadLettered(Event):
    """A record that could not be read, kept with its origin and the reason, never dropped."""

    TYPE: ClassVar[str] = "DeadLettered"
    VERSION: ClassVar[int] = 1
    type: Literal["DeadLettered"] = "DeadLettered"
    version: Literal[1] = 1

    topic: str
    partition: int
    offset: int
    reason: str
    errors: list[str] = Field(default_factory=list)
    payload_b64: str
    dead_lettered_at: UtcDatetime


class ProjectedOverrun(Event):
    """The p50 projection of period-end consumption first exceeded the limit in this period.

    Emitted once per (budget_id, period_key); a budget that opts in degrades on it early.
    """

    TYPE: ClassVar[str] = "ProjectedOverrun"
    VERSION: ClassVar[int] = 1
    type: Literal["ProjectedOverrun"] = "ProjectedOverrun"
    version: Literal[1] = 1

    tenant: TenantId
    budget_id: BudgetId
    period_key: Name
    period_end: UtcDatetime
    consumed: NonNegativeTokens
    limit: NonNegativeTokens
    projection: Projection
    detected_at: UtcDatetime
    recommended_action: str = ""
