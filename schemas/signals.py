"""What the pipeline concludes about a budget: crossings, policies, forecasts, dead letters."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    `budget_revision` is the budget revision the policy was decided under (added to version 1,
    optional: events written before it have none, and read as None). It tells an amendment that
    relaxed the budget apart from a replay passing an earlier point of the period. Old builds
    reject events carrying it (unknown fields are refused): upgrade the consumers of the
    policies topic (proxy, warehouse, alerts) before the workers.
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
    budget_revision: int | None = Field(default=None, ge=1)


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
    """A record that could not be read, kept with its origin and the reason, never dropped.

    A dead letter must fit on the dead-letter topic (the broker refuses a record over 1 MB, and
    a refused dead letter would stop the stream), so `payload_b64` may hold only the first bytes
    of a large record. Then `payload_truncated` is true and `payload_size` and `payload_sha256`
    describe the whole record, which is still on its source topic at (topic, partition,
    offset). The three fields were added to version 1 and are written only for a truncated
    payload: a whole-payload dead letter is exactly what version 1 always was, and a reader
    built before them refuses a truncated one instead of taking a prefix for the record.
    """

    TYPE: ClassVar[str] = "DeadLettered"
    VERSION: ClassVar[int] = 1
    _CUT_FIELDS: ClassVar[tuple[str, ...]] = (
        "payload_truncated",
        "payload_size",
        "payload_sha256",
    )
    type: Literal["DeadLettered"] = "DeadLettered"
    version: Literal[1] = 1

    topic: str
    partition: int
    offset: int
    reason: str
    errors: list[str] = Field(default_factory=list)
    payload_b64: str
    dead_lettered_at: UtcDatetime
    payload_truncated: bool = False
    payload_size: int | None = Field(default=None, ge=0)
    payload_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _cut_payload_is_described(self) -> DeadLettered:
        if self.payload_truncated and self.payload_size is None:
            raise ValueError("payload_size: is required when payload_truncated is true")
        if self.payload_truncated and self.payload_sha256 is None:
            raise ValueError("payload_sha256: is required when payload_truncated is true")
        return self

    def to_wire(self) -> dict[str, Any]:
        wire = super().to_wire()
        if not self.payload_truncated:
            for name in self._CUT_FIELDS:
                wire.pop(name)
        return wire


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
