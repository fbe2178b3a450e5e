"""What happens at the line: the routing policy a budget's consumption calls for.

A decision never gets less restrictive as consumption grows: if a budget demotes routes from 90
percent and only alerts at 100, it keeps demoting past 100. When several budgets charge one
request, the most restrictive decision wins, with a total order so the answer does not depend
on the order the budgets were looked at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.budgets import AtLimit, Metric
from schemas.signals import Policy, PolicyChanged
from streams.budgets import Budget
from streams.errors import InvalidState, NaiveDatetime, NoDecisions
from streams.periods import PeriodWindow

RESTRICTIVENESS: dict[Policy, int] = {
    "allow": 0,
    "alert_only": 1,
    "degrade_route": 2,
    "hard_stop": 3,
}
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """The policy for one budget now, with what the proxy needs to apply it.

    The context fields (budget, tenant, period, consumption) are there so `to_event` builds a
    `PolicyChanged` without looking anything up. `percent` may be infinite (a zero limit).
    """

    policy: Policy
    reason: str
    target_model: str | None = None
    model_map: dict[str, str] = field(default_factory=dict)
    reset_at: datetime | None = None
    concise_prompt: bool = False
    cache_ttl_seconds: int | None = None
    budget_id: str = ""
    tenant: str = ""
    period_key: str = ""
    at_limit: AtLimit = "alert_only"
    percent: float = 0.0
    metric: Metric | None = None
    consumed: int = 0
    limit: int = 0
    budget_revision: int | None = None
    """The budget revision decided under: a milder decision of a newer revision is a change of
    configuration, not a replay (`streams.faust.policy_publishing.should_publish`)."""

    def to_event(self, effective_at: datetime) -> PolicyChanged:
        """The `PolicyChanged` announcing this decision, effective at `effective_at`."""
        return PolicyChanged(
            tenant=self.tenant,
            budget_id=self.budget_id,
            period_key=self.period_key,
            policy=self.policy,
            at_limit=self.at_limit,
            reason=self.reason,
            effective_at=effective_at,
            reset_at=self.reset_at,
            metric=self.metric,
            consumed=self.consumed,
            limit=self.limit,
            remaining=max(0, self.limit - self.consumed),
            target_model=self.target_model,
            model_map=dict(self.model_map),
            concise_prompt=self.concise_prompt,
            cache_ttl_seconds=self.cache_ttl_seconds,
            budget_revision=self.budget_revision,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "reason": self.reason,
            "target_model": self.target_model,
            "model_map": dict(self.model_map),
            "reset_at": None if self.reset_at is None else self.reset_at.isoformat(),
            "concise_prompt": self.concise_prompt,
            "cache_ttl_seconds": self.cache_ttl_seconds,
            "budget_id": self.budget_id,
            "tenant": self.tenant,
            "period_key": self.period_key,
            "at_limit": self.at_limit,
            "percent": None if self.percent == float("inf") else self.percent,
            "metric": self.metric,
            "consumed": self.consumed,
            "limit": self.limit,
            "budget_revision": self.budget_revision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyDecision:
        if data.get("policy") not in RESTRICTIVENESS:
            raise InvalidState(
                "PolicyDecision", "policy", f"must be one of {list(RESTRICTIVENESS)}"
            )
        try:
            values = dict(data)
            reset_at = values.get("reset_at")
            values["reset_at"] = None if reset_at is None else datetime.fromisoformat(reset_at)
            percent = values.get("percent", 0.0)
            values["percent"] = float("inf") if percent is None else float(percent)
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise InvalidState("PolicyDecision", "(payload)", str(exc)) from None


def _fmt(percent: float) -> str:
    return "no allocation left" if percent == float("inf") else f"{percent:.1f}%"


def decide(
    budget: Budget,
    percent: float,
    window: PeriodWindow,
    reset_at: datetime | None,
    projected_overrun: bool = False,
    *,
    metric: Metric | None = None,
    consumed: int = 0,
    limit: int = 0,
) -> PolicyDecision:
    """The policy `percent` of the budget's limit calls for in `window`.

    At or above 100 percent: the budget's `at_limit` action. From `degrade.start_percent`, or on
    a projected overrun when the budget opts in: `degrade_route`, if the budget names a target.
    The more restrictive of the two applies; below both, `allow`.
    """
    spec = budget.spec
    degrade = spec.degrade
    on = f"of the {metric} limit" if metric else "of the limit"
    candidates: list[tuple[Policy, str]] = []
    if percent >= 100:
        candidates.append((spec.at_limit, f"{_fmt(percent)} {on}: at limit ({spec.at_limit})"))
    if degrade is not None and (degrade.target_model or degrade.model_map):
        if percent >= degrade.start_percent:
            reason = f"{_fmt(percent)} {on}: demotion starts at {degrade.start_percent}%"
            candidates.append(("degrade_route", reason))
        elif projected_overrun and degrade.on_projected_overrun:
            candidates.append(("degrade_route", f"{_fmt(percent)} {on}: forecast overruns"))
    policy: Policy = "allow"
    reason = f"{_fmt(percent)} {on}"
    for candidate, why in candidates:
        if RESTRICTIVENESS[candidate] > RESTRICTIVENESS[policy]:
            policy, reason = candidate, why
    route = degrade if policy == "degrade_route" else None
    return PolicyDecision(
        policy=policy,
        reason=reason,
        target_model=None if route is None else route.target_model,
        model_map={} if route is None else dict(route.model_map),
        reset_at=reset_at,
        concise_prompt=route is not None and route.concise_prompt,
        cache_ttl_seconds=None if route is None else route.cache_ttl_seconds,
        budget_id=budget.budget_id,
        tenant=budget.tenant,
        period_key=window.key,
        at_limit=spec.at_limit,
        percent=percent,
        metric=metric,
        consumed=consumed,
        limit=limit,
        budget_revision=budget.revision,
    )


def _rank(decision: PolicyDecision) -> tuple[int, datetime]:
    # Among equals, the later reset is the more restrictive (a longer wait for hard_stop).
    return RESTRICTIVENESS[decision.policy], decision.reset_at or _EARLIEST


def most_restrictive(decisions: Iterable[PolicyDecision]) -> PolicyDecision:
    """The decision that wins for a request several budgets charge; independent of order."""
    pool = list(decisions)
    if not pool:
        raise NoDecisions()
    best = max(_rank(d) for d in pool)
    tied = [d for d in pool if _rank(d) == best]
    if len(tied) == 1:
        return tied[0]
    return max(tied, key=lambda d: orjson.dumps(d.to_dict(), option=orjson.OPT_SORT_KEYS))


def policy_changed(previous: PolicyDecision | None, current: PolicyDecision) -> bool:
    """Whether `current` must be announced: what the proxy does differs from `previous`.

    With nothing announced yet, only a policy other than `allow` is news.
    """
    if previous is None:
        return current.policy != "allow"
    if previous.policy == current.policy == "allow":
        return False
    return (
        previous.policy,
        previous.period_key,
        previous.reset_at,
        previous.target_model,
        previous.model_map,
        previous.concise_prompt,
        previous.cache_ttl_seconds,
    ) != (
        current.policy,
        current.period_key,
        current.reset_at,
        current.target_model,
        current.model_map,
        current.concise_prompt,
        current.cache_ttl_seconds,
    )


def retry_after_seconds(reset_at: datetime, now: datetime) -> int:
    """Whole seconds until the reset, rounded up, at least 1 (for HTTP Retry-After)."""
    for name, value in (("reset_at", reset_at), ("now", now)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetime(name, value)
    delta = reset_at - now
    seconds = delta // _SECOND + (1 if delta % _SECOND else 0)
    return max(1, seconds)
