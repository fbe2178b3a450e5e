"""The alert payload: one dict that every channel renders, built once when it is enqueued.

It is stored in the outbox row, so a retry or a manual resend sends exactly what the first
attempt sent. Everything here is pure: the budget tree and the latest known state of a budget
(policy in force, forecast) are passed in by the consumer, which keeps them in PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from schemas.base import Event
from schemas.signals import ForecastUpdated, PolicyChanged, ProjectedOverrun, ThresholdCrossed
from services.alerts.routing import AlertSignal, PriorPolicy, is_period_reset

_NAMESPACE = uuid.UUID("6f1c1f3e-8a53-4c1e-9a63-2d1f0c8b7a10")

DEFAULT_ACTIONS = {
    "hard_stop": "Requests are refused (HTTP 429) until the period resets; raise the limit or "
    "move allocation from the parent's pool to resume now.",
    "degrade_route": "Requests are routed to the cheaper model; review the demotion or raise "
    "the limit if quality matters more than cost.",
    "alert_only": "Spending continues past the limit; decide whether to raise it or to enforce.",
    "allow": "No action needed.",
    "projected_overrun": "At the current pace the budget runs out before the period ends; "
    "reduce usage, raise the limit or enable degrade on projected overrun.",
}


@dataclass(frozen=True)
class BudgetView:
    """What the alerts service last learned about a budget from the topics.

    `projections` maps a metric to its latest projection (as JSON); `metric` is the metric
    of the latest crossing or policy, the one an alert without its own metric reports.
    """

    name: str = ""
    policy: str = "allow"
    policy_reason: str = ""
    metric: str | None = None
    consumed: int | None = None
    limit: int | None = None
    effective_limit: int | None = None
    projections: dict[str, dict[str, Any]] = field(default_factory=dict)
    trend_vs_prev_7d: float | None = None
    last_reset_at: str | None = None
    policy_period: str | None = None

    @property
    def prior(self) -> PriorPolicy:
        return PriorPolicy(self.policy, self.policy_period)

    def reset_since(self, at: datetime) -> bool:
        """Whether a period reset later than `at` was already seen (the event is stale)."""
        return self.last_reset_at is not None and datetime.fromisoformat(self.last_reset_at) > at

    def projection(self, metric: str | None) -> dict[str, Any] | None:
        if metric is not None and metric in self.projections:
            return self.projections[metric]
        return next(iter(self.projections.values()), None)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetView:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def update_view(view: BudgetView, event: Event) -> BudgetView:
    """Fold one signal event into what we know of its budget (pure; replay gives the same)."""
    if isinstance(event, ThresholdCrossed):
        projections = dict(view.projections)
        if event.projection is not None:
            projections[event.metric] = event.projection.model_dump(mode="json")
        trend = event.trend_vs_prev_7d
        return replace(
            view,
            metric=event.metric,
            consumed=event.consumed,
            limit=event.limit,
            effective_limit=event.effective_limit,
            projections=projections,
            trend_vs_prev_7d=trend if trend is not None else view.trend_vs_prev_7d,
        )
    if isinstance(event, PolicyChanged):
        if is_period_reset(event, view.prior):
            view = replace(view, last_reset_at=event.effective_at.isoformat())
        view = replace(view, policy_period=event.period_key)
        if not event.limit:
            return replace(view, policy=event.policy, policy_reason=event.reason)
        return replace(
            view,
            policy=event.policy,
            policy_reason=event.reason,
            metric=event.metric or view.metric,
            consumed=event.consumed,
            limit=event.limit,
        )
    if isinstance(event, ForecastUpdated):
        projections = dict(view.projections)
        for p in event.projections:
            projections[p.metric] = p.model_dump(mode="json")
        return replace(view, projections=projections)
    if isinstance(event, ProjectedOverrun):
        projections = dict(view.projections)
        projections[event.projection.metric] = event.projection.model_dump(mode="json")
        return replace(view, projections=projections, consumed=event.consumed, limit=event.limit)
    return view


def budget_path(budget_id: str, parents: Mapping[str, str | None]) -> list[str]:
    """Budget ids from the root of the tree down to `budget_id`; stops at a cycle or a gap."""
    path = [budget_id]
    seen = {budget_id}
    current = parents.get(budget_id)
    while current is not None and current not in seen:
        path.append(current)
        seen.add(current)
        current = parents.get(current)
    return list(reversed(path))


def delivery_id(signal: AlertSignal, channel: str) -> str:
    """Stable per (dedupe key, channel): the same alert has the same id on every attempt.

    Receivers use it to drop duplicates (Standard Webhooks `webhook-id`, email Message-ID).
    """
    key = "\x1f".join(
        (signal.tenant, signal.budget_id, signal.period_key, signal.kind, signal.discriminator)
    )
    return str(uuid.uuid5(_NAMESPACE, f"{key}\x1f{channel}"))


def budget_link(api_base: str, tenant: str, budget_id: str) -> str:
    """The API's read route for the budget; ids may hold "/" (the API takes them as a path)."""
    base = api_base.rstrip("/")
    return f"{base}/v1/tenants/{quote(tenant, safe='')}/budgets/{quote(budget_id, safe='/')}"


def build_payload(
    event: Event,
    signal: AlertSignal,
    path: list[str],
    view: BudgetView,
    api_base: str,
) -> dict[str, Any]:
    """The channel-neutral payload of one alert.

    `view` must already include `event` (fold it with `update_view` first), so the projection
    and the policy in force are the freshest the service knows.
    """
    consumed, limit, effective = view.consumed, view.limit, view.effective_limit
    trend, metric = view.trend_vs_prev_7d, view.metric
    action, period_end, policy, policy_reason = "", None, view.policy, view.policy_reason
    if isinstance(event, ThresholdCrossed):
        consumed, limit, effective = event.consumed, event.limit, event.effective_limit
        trend = event.trend_vs_prev_7d if event.trend_vs_prev_7d is not None else trend
        metric, action, period_end = event.metric, event.recommended_action, event.period_end
    elif isinstance(event, ProjectedOverrun):
        consumed, limit = event.consumed, event.limit
        metric = event.projection.metric
        action, period_end = event.recommended_action, event.period_end
        action = action or DEFAULT_ACTIONS["projected_overrun"]
    elif isinstance(event, PolicyChanged):
        policy, policy_reason, metric = event.policy, event.reason, event.metric
        if event.limit:
            consumed, limit = event.consumed, event.limit
        period_end = event.reset_at
    if effective is None:
        effective = limit
    projection = view.projection(metric)
    action = action or DEFAULT_ACTIONS.get(policy, "")
    percent = round(100.0 * consumed / effective, 2) if consumed is not None and effective else None
    projected_percent = None
    if projection is not None and effective:
        projected_percent = round(100.0 * float(projection["p50"]) / effective, 2)
    name = view.name or signal.budget_id
    return {
        "alert_id": "",
        "kind": signal.kind,
        "severity": severity(signal),
        "title": title(signal, name, metric),
        "tenant": signal.tenant,
        "budget_id": signal.budget_id,
        "budget_name": name,
        "budget_path": path,
        "period_key": signal.period_key,
        "period_end": period_end.isoformat() if period_end is not None else None,
        "metric": metric,
        "threshold": signal.threshold,
        "consumed": consumed,
        "limit": limit,
        "effective_limit": effective,
        "percent_used": percent,
        "projection": projection,
        "projected_percent": projected_percent,
        "trend_vs_prev_7d": trend,
        "policy": {"name": policy, "reason": policy_reason},
        "recommended_action": action,
        "link": budget_link(api_base, signal.tenant, signal.budget_id),
        "occurred_at": signal.at.isoformat(),
    }


def severity(signal: AlertSignal) -> str:
    if signal.urgent:
        return "critical"
    if signal.kind == "period_reset":
        return "info"
    if signal.kind == "projected_overrun" or signal.policy == "degrade_route":
        return "warning"
    return "warning" if (signal.threshold or 0) >= 90 else "info"


def title(signal: AlertSignal, name: str, metric: str | None) -> str:
    period = signal.period_key
    if signal.kind == "threshold":
        return f"{name} reached {signal.threshold}% of its {metric} token limit ({period})"
    if signal.kind == "projected_overrun":
        return f"{name} is projected to overrun its {metric} token limit ({period})"
    if signal.kind == "period_reset":
        return f"{name}: period reset, policy back to allow ({period})"
    return f"{name}: policy is now {signal.policy} ({period})"


def with_id(payload: dict[str, Any], alert_id: str) -> dict[str, Any]:
    return {**payload, "alert_id": alert_id}
