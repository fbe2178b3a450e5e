"""Builders of the events the alerts service consumes (and of an outbox row it claimed), with
realistic defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.budgets import BudgetDefined, BudgetSpec, Limits
from schemas.signals import (
    Band,
    ForecastUpdated,
    PolicyChanged,
    ProjectedOverrun,
    Projection,
    ThresholdCrossed,
)
from services.alerts.outbox import ClaimedRow

# A period wholly in the past, so "not before" times are due at once.
OCT_START = datetime(2026, 10, 1, tzinfo=UTC)
NOV_START = datetime(2026, 11, 1, tzinfo=UTC)
AT = datetime(2026, 10, 17, 10, 30, tzinfo=UTC)


def projection(p50: float = 470e6, metric: str = "total") -> Projection:
    return Projection(
        metric=metric,  # type: ignore[arg-type]
        p50=p50,
        band80=Band(low=p50 * 0.93, high=p50 * 1.07),
        band95=Band(low=p50 * 0.88, high=p50 * 1.12),
        method="ets",
        as_of=AT,
    )


def budget(
    tenant: str, budget_id: str, parent: str | None = None, limit: int = 420_000_000
) -> BudgetDefined:
    spec = BudgetSpec(
        name=budget_id.replace("-", " "),
        limits=Limits(total_tokens=limit),
        parent=parent,
        at_limit="hard_stop",
    )
    return BudgetDefined(
        budget_id=budget_id, tenant=tenant, revision=1, occurred_at=AT, actor="test", spec=spec
    )


def crossed(tenant: str, budget_id: str, threshold: int, **over: Any) -> ThresholdCrossed:
    limit = over.pop("limit", 420_000_000)
    fields: dict[str, Any] = {
        "tenant": tenant,
        "budget_id": budget_id,
        "period_key": "2026-10",
        "period_start": OCT_START,
        "period_end": NOV_START,
        "metric": "total",
        "threshold": threshold,
        "consumed": limit * threshold // 100,
        "limit": limit,
        "effective_limit": limit,
        "crossed_at": AT,
        "projection": projection(),
        "trend_vs_prev_7d": 0.18,
        "recommended_action": "Move 50M tokens from the org pool or enable degrade_route.",
    }
    fields.update(over)
    return ThresholdCrossed(**fields)


def policy(tenant: str, budget_id: str, name: str, **over: Any) -> PolicyChanged:
    fields: dict[str, Any] = {
        "tenant": tenant,
        "budget_id": budget_id,
        "period_key": "2026-10",
        "policy": name,
        "at_limit": "hard_stop",
        "reason": f"consumption reached 100% of the limit: {name}",
        "effective_at": AT,
        "reset_at": NOV_START,
        "metric": "total",
        "consumed": 420_000_000,
        "limit": 420_000_000,
    }
    fields.update(over)
    return PolicyChanged(**fields)


def reset(
    tenant: str, budget_id: str, reason: str = "period reset: new period 2026-11"
) -> PolicyChanged:
    """A period reset: `allow` in the new period (the reason may or may not name it)."""
    return policy(
        tenant,
        budget_id,
        "allow",
        period_key="2026-11",
        reason=reason,
        effective_at=NOV_START,
        reset_at=datetime(2026, 12, 1, tzinfo=UTC),
        consumed=0,
    )


def overrun(tenant: str, budget_id: str) -> ProjectedOverrun:
    return ProjectedOverrun(
        tenant=tenant,
        budget_id=budget_id,
        period_key="2026-10",
        period_end=NOV_START,
        consumed=248_000_000,
        limit=420_000_000,
        projection=projection(),
        detected_at=AT,
    )


def forecast(tenant: str, budget_id: str, p50: float = 470e6) -> ForecastUpdated:
    return ForecastUpdated(
        tenant=tenant,
        budget_id=budget_id,
        period_key="2026-10",
        period_end=NOV_START,
        as_of=AT,
        days_of_history=16,
        projections=[projection(p50)],
    )


def claimed_row(**over: Any) -> ClaimedRow:
    """An outbox row on its third attempt at paging for a 100% crossing."""
    fields: dict[str, Any] = {
        "id": 7,
        "delivery_id": "3f0b5a52-6f7e-5d3a-9c1b-2a4e6f8d0b1c",
        "tenant": "acme",
        "budget_id": "acme-copilot",
        "period_key": "2026-10",
        "kind": "threshold",
        "discriminator": "100:total",
        "channel": "oncall",
        "channel_type": "pagerduty",
        "action": "trigger",
        "payload": {},
        "attempts": 3,
        "event_at": AT,
        "first_attempt_at": AT + timedelta(seconds=1),
        "last_attempt_at": AT + timedelta(seconds=9),
        "source_type": "ThresholdCrossed",
        "source_topic": "allotment.thresholds",
        "source_partition": 4,
        "source_offset": 17,
    }
    fields.update(over)
    return ClaimedRow(**fields)
