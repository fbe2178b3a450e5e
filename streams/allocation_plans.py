"""Wishes checked against the allocation rules: overflow draws, reservations, auto-rebalance.

Each function takes the tenant's live specs, its folded `AllocationState`, the period window and
the instant `at`, and returns the event(s) to publish, or raises `AllocationRejected` naming the
field and the rule. Pure: nothing here reads a clock or talks to Kafka.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

from schemas.allocation import AllocationMoved, OverflowDrawn, ReservationMade
from schemas.budgets import BudgetSpec, Metric
from schemas.errors import FieldError
from streams.allocation import (
    AllocationState,
    RebalanceRule,
    Window,
    apply_allocation_event,
    effective_limits,
    unspent,
)
from streams.allocation_tree import AllocationRejected, ancestors, children_of


def plan_overflow_draw(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    budget_id: str,
    window: Window,
    at: datetime,
    consumed: Mapping[str, Mapping[str, int]],
    *,
    metric: Metric,
    tokens: int,
    draw_id: str,
    tenant: str,
    actor: str,
    reason: str,
    partial: bool = False,
) -> OverflowDrawn | None:
    """A draw of `tokens` from the parent's pool, within the child's cap and the pool.

    `consumed[budget_id][metric]` is what the parent and its children consumed in `window` so
    far: the parent can only give what is unallocated and unspent at its level, its own direct
    use taken out (`streams.allocation.unspent`, the rule rebalance and reservations follow).
    With `partial` (the pipeline's automatic draw when a child reaches its limit) the draw is
    cut to what cap and pool allow, and None means nothing can be drawn.
    """
    spec = specs[budget_id]
    if spec.parent is None:
        raise AllocationRejected(budget_id, [FieldError("budget_id", "has no parent to draw from")])
    if metric not in spec.limits.by_metric():
        raise AllocationRejected(
            budget_id, [FieldError("metric", f"the budget limits no {metric}")]
        )
    cap = spec.overflow_cap_tokens or 0
    used = state.drawn.get(budget_id, {}).get(window.key, {}).get(metric, 0)
    free = unspent(specs, state, spec.parent, window, at, consumed).get(metric, 0)
    allowed = min(cap - used, free)
    if partial:
        tokens = min(tokens, allowed)
        if tokens <= 0:
            return None
    elif tokens > cap - used:
        rule = f"exceeds the overflow cap: {used} of {cap} already drawn in {window.key}"
        raise AllocationRejected(budget_id, [FieldError("tokens", rule)])
    elif tokens > free:
        spent = consumed.get(spec.parent, {}).get(metric, 0)
        rule = (
            f"exceeds the pool of {spec.parent!r}: {free} {metric} tokens unallocated and "
            f"unspent ({spent} consumed in {window.key})"
        )
        raise AllocationRejected(budget_id, [FieldError("tokens", rule)])
    return OverflowDrawn(
        draw_id=draw_id,
        tenant=tenant,
        budget_id=budget_id,
        parent_id=spec.parent,
        period_key=window.key,
        metric=metric,
        tokens=tokens,
        occurred_at=at,
        actor=actor,
        reason=reason,
    )


def check_reservation(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    event: ReservationMade,
    window: Window,
    at: datetime,
    consumed: Mapping[str, Mapping[str, int]],
) -> None:
    """A reservation must lie ahead, and its budget must still have the tokens to hold.

    `window` is the period the reservation starts in; `consumed[budget_id][metric]` is what the
    budget and its children consumed in it so far (missing: nothing yet, as in a period that
    has not begun). Tokens already spent cannot be earmarked again, and a parent can only hold
    back its pool, less its own use (see `streams.allocation.unspent`).
    """
    if event.starts_at <= at:
        raise AllocationRejected(
            event.budget_id, [FieldError("starts_at", "must be in the future (a later range)")]
        )
    if f"reserve:{event.reservation_id}" in state.applied:
        rule = "was already used in this tenant (released ids are not reused)"
        raise AllocationRejected(event.budget_id, [FieldError("reservation_id", rule)])
    if event.metric not in specs[event.budget_id].limits.by_metric():
        rule = f"the budget limits no {event.metric}"
        raise AllocationRejected(event.budget_id, [FieldError("metric", rule)])
    free = unspent(specs, state, event.budget_id, window, at, consumed)[event.metric]
    if event.tokens > free:
        spent = consumed.get(event.budget_id, {}).get(event.metric, 0)
        limit = effective_limits(specs, state, event.budget_id, window, at)[event.metric]
        if children_of(specs, event.budget_id):
            what = f"unallocated and unspent in its pool ({spent} consumed in {window.key})"
        else:
            what = f"unspent (effective limit {limit} minus {spent} consumed in {window.key})"
        rule = f"exceeds what the budget can still hold back: {free} {what}"
        raise AllocationRejected(event.budget_id, [FieldError("tokens", rule)])


def rebalance_due(rule: RebalanceRule, window: Window, at: datetime) -> bool:
    """True from the rule's point of the period (default its midpoint) to the period's end."""
    due = window.start + (window.end - window.start) * rule.at_fraction
    return rule.enabled and due <= at < window.end


def plan_rebalance(
    specs: Mapping[str, BudgetSpec],
    state: AllocationState,
    window: Window,
    at: datetime,
    consumed: Mapping[str, Mapping[str, int]],
    *,
    tenant: str,
    actor: str,
) -> list[AllocationMoved]:
    """The moves auto-rebalance makes now: each under-used child gives a share back to its pool.

    `consumed[budget_id][metric]` is the child's consumption in `window`. A child is rebalanced
    at most once per (period, metric), and the tenant's moves in a period stay within the cap.
    Budgets on a rolling period are skipped (a rolling window has no midpoint).

    A child that is itself a parent gives at most what is unallocated and unspent at its level
    (`streams.allocation.unspent`): what its own children hold stays theirs, so allocation is
    conserved and no pool goes below zero. Deeper budgets go first and each move is folded in
    before the next is planned, so what a grandchild gives back can move on up in the same run
    and the result does not depend on how often the rebalancer runs.
    """
    rule = state.rule
    if not rebalance_due(rule, window, at):
        return []
    room = None if rule.tenant_cap_tokens is None else rule.tenant_cap_tokens
    if room is not None:
        room -= state.rebalanced.get(window.key, 0)
    moves: list[AllocationMoved] = []
    for budget_id in sorted(specs, key=lambda b: (-len(ancestors(specs, b)), b)):
        spec = specs[budget_id]
        if spec.parent is None or spec.parent not in specs or spec.period.kind == "rolling":
            continue
        limits = effective_limits(specs, state, budget_id, window, at)
        free = unspent(specs, state, budget_id, window, at, consumed)
        for metric, limit in limits.items():
            move_id = rebalance_move_id(budget_id, window.key, metric)
            used = consumed.get(budget_id, {}).get(metric, 0)
            if (
                f"move:{move_id}" in state.applied
                or limit <= 0
                or used * 100 >= rule.under_percent * limit
            ):
                continue
            share = (limit - used) * rule.share_percent // 100
            tokens = min(share, free[metric])
            if room is not None:
                tokens = min(tokens, room)
            if tokens <= 0:
                continue
            if room is not None:
                room -= tokens
            move = AllocationMoved(
                move_id=move_id,
                tenant=tenant,
                from_budget_id=budget_id,
                to_budget_id=spec.parent,
                period_key=window.key,
                metric=metric,
                tokens=tokens,
                rule="rebalance",
                occurred_at=at,
                actor=actor,
                reason=(
                    f"auto-rebalance: used {used} of {limit} {metric} tokens "
                    f"(< {rule.under_percent}%), gives {rule.share_percent}% of the unused"
                    + (f", capped at the {free[metric]} unspent" if share > free[metric] else "")
                ),
            )
            moves.append(move)
            state = apply_allocation_event(state, move)
    return moves


def rebalance_move_id(budget_id: str, period_key: str, metric: str) -> str:
    """The one move id auto-rebalance may use per (budget, period, metric), within 200 chars."""
    move_id = f"rebalance:{budget_id}:{period_key}:{metric}"
    if len(move_id) <= 200:
        return move_id
    digest = hashlib.sha256(budget_id.encode()).hexdigest()[:40]
    return f"rebalance:sha256-{digest}:{period_key}:{metric}"
