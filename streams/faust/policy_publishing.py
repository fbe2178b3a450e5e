"""Which routing-policy decisions reach the policies topic, and stamped when.

Two paths publish a policy: a charge (`charging.Charger`: one decision at each crossing of the
current period, then one at the ledger's "now") and the reset timer or a forecast
(`agents.Pipeline.redecide`: a budget without traffic). Both build the decision here and pass
the same guard before sending it, because the topic is compacted and its readers (the proxy,
the warehouse, the API) take the latest `effective_at` as the policy in force: if the two paths
disagreed on what is newer (a replay, a second worker, an amended budget, a decision stamped
ahead of the timer's clock), one would publish over the other's newer decision, or a
hard-stopped budget would never be lifted. The rules here are pure: wires in, answers out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.budgets import Metric
from streams.budgets import Budget
from streams.ledger import LedgerState, totals_at
from streams.periods import from_ms, next_reset, period_of, window_of_key
from streams.policy import RESTRICTIVENESS, PolicyDecision, decide, policy_changed
from streams.thresholds import Crossing, consumed_of, percent_of, usage_percent


def policy_event(
    budget: Budget,
    state: LedgerState,
    now: datetime,
    limits: Mapping[Metric, int] | None = None,
    projected_overrun: bool = False,
) -> dict[str, Any]:
    """The routing policy in force for `budget` at `now`, from its ledger (domain `decide`),
    against `limits` (the effective ones at `now`; default: the spec's), knowing whether an
    overrun of the period was projected."""
    period = budget.spec.period
    limits = budget.limits if limits is None else limits
    totals = totals_at(state, budget, now)
    percent, metric = usage_percent(totals, dict(limits))
    decision = decide(
        budget,
        percent,
        period_of(period, now),
        next_reset(period, now),
        projected_overrun,
        metric=metric,
        consumed=consumed_of(totals, metric),
        limit=limits.get(metric, 0),
    )
    return decision.to_event(now).to_wire()


def policy_at_crossing(
    budget: Budget, crossing: Crossing, projected_overrun: bool = False
) -> dict[str, Any]:
    """The policy in force right after `crossing`, effective when it crossed (`crossed_at_ms`:
    the line's time, bounded by the ledger's cap and its period's start)."""
    at = from_ms(crossing.crossed_at_ms)
    period = budget.spec.period
    decision = decide(
        budget,
        percent_of(crossing.consumed, crossing.limit),
        window_of_key(period, crossing.period_key),
        next_reset(period, at),
        projected_overrun,
        metric=crossing.metric,
        consumed=crossing.consumed,
        limit=crossing.limit,
    )
    return decision.to_event(at).to_wire()


_DECISION_FIELDS = frozenset(PolicyDecision.__dataclass_fields__) - {"percent"}


def decision_of(wire: Mapping[str, Any]) -> PolicyDecision:
    """The decision a `PolicyChanged` wire announces (what the policies topic holds)."""
    found = {k: v for k, v in wire.items() if k in _DECISION_FIELDS}
    return PolicyDecision.from_dict({"reason": "", **found})


def should_publish(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether `new` must be published over `current` (what the policies topic holds).

    Whether the two differ for the proxy is the domain's rule (`streams.policy.policy_changed`).
    The guards before it are about delivery, not policy: a replay after a crash, or a second
    worker after a rebalance (or one whose budget table lags), recomputes decisions the topic
    already moved past, and must not publish them over the newer one. A milder decision under
    a newer budget revision is no replay: the owner relaxed the budget (raised `degrade`'s
    start, removed it), and the proxy must hear it now, not at the period's end.
    """
    if current is None:
        return policy_changed(None, decision_of(new))
    if _instant(new.get("effective_at")) < _instant(current.get("effective_at")):
        return False  # a replay catching up: never publish over a newer decision
    old_revision, new_revision = current.get("budget_revision"), new.get("budget_revision")
    known = old_revision is not None and new_revision is not None
    if known and new_revision < old_revision:
        return False  # decided under an older configuration than the one in force
    if (
        not (known and new_revision > old_revision)
        and current.get("period_key") == new["period_key"]
        and current.get("limit") == new.get("limit")
        and current.get("at_limit") == new.get("at_limit")
        and RESTRICTIVENESS[new["policy"]] < RESTRICTIVENESS[current["policy"]]
    ):
        # Within a period consumption only grows: under the same configuration, limit and
        # action, a milder policy is a replay (or a second worker) passing an earlier point.
        # A policy written before revisions were recorded counts as the same configuration.
        return False
    return policy_changed(decision_of(current), decision_of(new))


def decided_before(current: Mapping[str, Any], budget: Budget) -> bool:
    """Whether the policy in force was decided under an earlier revision of `budget` (or by a
    build that did not record revisions): an amendment the policy may not reflect yet."""
    revision = current.get("budget_revision")
    return revision is None or int(revision) < budget.revision


def redecision_due(
    current: Mapping[str, Any],
    budget: Budget,
    now: datetime,
    touched: Collection[str] = (),
    redecided: int | None = None,
) -> bool:
    """Whether the reset timer must re-decide `budget`, whose policy in force is `current`.

    A hard-stopped budget gets no traffic, so no charge would re-decide it. Due: a restrictive
    policy whose `reset_at` passed, or whose tenant's allocation moved (`touched` tenants: a
    draw that lifts a hard stop); and a policy decided under an earlier budget revision (a
    raised limit, another at-limit action), unless the timer already re-decided this revision
    (`redecided`): when nothing the proxy sees changed, nothing was published and the policy
    keeps its older revision.
    """
    if decided_before(current, budget) and redecided != budget.revision:
        return True
    reset_at = current.get("reset_at")
    if current.get("policy") == "allow" or reset_at is None:
        return False
    return _instant(reset_at) <= now or current.get("tenant") in touched


def timer_instant(current: Mapping[str, Any], now: datetime) -> datetime:
    """When the reset timer's decision over `current` takes effect: `now`, or just after
    `current` when that is stamped ahead of this clock (a charge decides at its event time, up
    to the clock skew ahead). Never at or before it: `should_publish` refuses an older decision,
    and the proxy, warehouse and API take the latest `effective_at` as the one in force."""
    return max(now, _instant(current.get("effective_at")) + _AFTER)


def timer_settled(current: Mapping[str, Any], new: dict[str, Any]) -> bool:
    """Whether the timer is done with `new`, its re-decision over `current`: published, or the
    same for the proxy. One refused for delivery's sake (a budget table behind the topic's
    revision) is tried again next tick, never marked done (review 3A, finding 1). Over a policy
    written before revisions were recorded, a refusal is final (`should_publish` counts it as
    the same configuration, for charges too): such a relaxation waits for the period's end or a
    change of limit or action, instead of a retry on every tick."""
    same = not policy_changed(decision_of(current), decision_of(new))
    legacy = current.get("budget_revision") is None
    return same or legacy or should_publish(dict(current), new)


_AFTER = timedelta(milliseconds=1)  # the proxy compares effective times in milliseconds


def _instant(value: Any) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
