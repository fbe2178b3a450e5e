"""The ledger and policy stages for one charge message: fold, crossings, routing policy.

Crash safety rests on three facts (design.md, invariants 1 and 3):
- The fold skips lines at or below the watermark of their source partition, so a redelivered
  charge, cut anywhere, is applied exactly above it (`streams.ledger.apply_charge`).
- "Threshold already emitted" is read from the thresholds topic itself: it is the changelog of
  the worker's crossings table, restored from that topic after every start or rebalance
  (`tables.EmittedCrossings`). The stored ledger value also keeps the full payload of every
  crossing of its live periods, so if the local state ran ahead of the topic (kill -9 after the
  store write, before the send was acknowledged) the next charge of that budget emits what is
  missing; and if the state fell behind (a recovery replayed an older value), the crossing found
  again is already in the topic and is not sent twice.
- Routing policy is idempotent: the latest per budget wins on a compacted topic, and it is only
  sent when it differs from what the policies topic holds (`policy_publishing.should_publish`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.budgets import Metric
from schemas.charges import BudgetCharged
from schemas.signals import ThresholdCrossed
from streams.budgets import Budget
from streams.errors import OutOfOrderCharge
from streams.faust.policy_publishing import policy_at_crossing, policy_event, should_publish
from streams.ledger import ChargeLine, ChargeResult, LedgerState, apply_charge
from streams.periods import from_ms, period_of, period_of_ms, window_of_key
from streams.policy import decide
from streams.thresholds import Crossing


def crossing_key(budget_id: str, period_key: str, threshold: int) -> tuple[str, str, int]:
    return (budget_id, period_key, threshold)


@dataclass
class StoredLedger:
    """The ledger table's value: the domain state plus the crossings of its live periods."""

    state: LedgerState
    crossings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"state": self.state.to_dict(), "crossings": self.crossings})

    @classmethod
    def from_bytes(cls, raw: bytes | None, budget_id: str) -> StoredLedger:
        if raw is None:
            return cls(LedgerState(budget_id))
        data = orjson.loads(raw)
        return cls(LedgerState.from_dict(data["state"]), dict(data.get("crossings", {})))


@dataclass
class ChargeOutcome:
    stored: StoredLedger
    lines: Sequence[ChargeLine] = ()
    thresholds: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    applied: int = 0
    skipped: int = 0
    late: int = 0


def threshold_event(budget: Budget, crossing: Crossing, at_limit_hint: str) -> dict[str, Any]:
    """The wire form of a crossing; deterministic, so a re-emission is byte-identical.

    `crossing.limit` is the limit the ledger compared with (the effective one when allocation
    moved tokens); `limit` on the wire is the spec's.
    """
    window = window_of_key(budget.spec.period, crossing.period_key)
    event = ThresholdCrossed(
        tenant=budget.tenant,
        budget_id=budget.budget_id,
        period_key=crossing.period_key,
        period_start=window.start,
        period_end=window.end,
        metric=crossing.metric,
        threshold=crossing.threshold,
        consumed=crossing.consumed,
        limit=budget.limits.get(crossing.metric, crossing.limit),
        effective_limit=crossing.limit,
        crossed_at=from_ms(crossing.crossed_at_ms),
        recommended_action=at_limit_hint,
    )
    return event.to_wire()


def in_position_order(lines: list[ChargeLine]) -> list[ChargeLine]:
    """The lines sorted by position, each position once.

    Resolve emits them that way; a charge written by an older build (or another producer) may
    not, and the fold refuses such a charge. All lines share one source partition, so sorting
    loses nothing: the watermark still skips exactly what was applied.
    """
    if all(a.position < b.position for a, b in itertools.pairwise(lines)):
        return lines
    unique = {line.position: line for line in lines}
    return [unique[p] for p in sorted(unique)]


def _no_overrun(budget_id: str, period_key: str) -> bool:
    return False


def _no_fields(budget_id: str, period_key: str, metric: Metric, limit: int) -> dict[str, Any]:
    return {}


def _no_tracking(budget: Budget, source_partition: int, lines: Sequence[ChargeLine]) -> None:
    return None


@dataclass(frozen=True)
class ForecastHooks:
    """What the forecast agent (`forecasting.py`) contributes to a charge.

    `projected_overrun(budget_id, period_key)`: whether an overrun of that period was
    announced; the policy decisions pass it to `streams.policy.decide`, so a budget that opts
    in stays demoted on later charges. `crossing_fields(budget_id, period_key, metric,
    effective_limit)`: what a new crossing takes from the latest forecast of its period; added
    before the crossing is stored, so a re-emission after a crash is byte-identical.
    `track(budget, source_partition, lines)`: every applied charge's lines, as the ledger
    decoded them (in position order), for the forecast's daily history; called by the ledger
    agent inside the charge's event, so they are tracked before its offset is committed.
    """

    projected_overrun: Callable[[str, str], bool] = _no_overrun
    crossing_fields: Callable[[str, str, Metric, int], dict[str, Any]] = _no_fields
    track: Callable[[Budget, int, Sequence[ChargeLine]], None] = _no_tracking


Limits = Callable[[Budget, datetime], Mapping[Metric, int] | None]
"""A budget's effective limits at an instant; None when allocation changed nothing for it."""


def spec_limits(budget: Budget, at: datetime) -> None:
    """No allocation book: every budget is held to its spec's limits."""
    return None


def _merge(first: ChargeResult, second: ChargeResult) -> ChargeResult:
    return ChargeResult(
        second.state,
        first.applied + second.applied,
        first.skipped + second.skipped,
        [*first.late, *second.late],
        [*first.crossings, *second.crossings],
    )


class Charger:
    """Applies charge messages to stored ledgers and says what to publish.

    `limits` gives a budget's effective limits (the allocation book's, `allocations.py`); the
    ledger fold, the crossings and the policy decisions all use them.
    """

    def __init__(
        self,
        late_window: timedelta,
        emitted: Callable[[tuple[str, str, int]], bool],
        current_policy: Callable[[str], dict[str, Any] | None],
        limits: Limits = spec_limits,
    ) -> None:
        self.late_window = late_window
        self._emitted = emitted
        self._current_policy = current_policy
        self.limits = limits
        self.forecasts = ForecastHooks()

    def fold(
        self,
        state: LedgerState,
        budget: Budget,
        partition: int,
        lines: Sequence[ChargeLine],
        newest_trusted_ms: int | None = None,
    ) -> ChargeResult:
        """`apply_charge` against the effective limits.

        Allocation moves tokens for one period, so the lines are folded in runs of one period
        each (in position order), each run against the limits at its latest event time; a
        tenant that moved nothing is folded in one call against its spec's limits.
        """
        at = from_ms(max(line.occurred_at_ms for line in lines))
        limits = self.limits(budget, at)
        if limits is None:
            return apply_charge(
                state, budget, partition, lines, self.late_window, None, newest_trusted_ms
            )
        period = budget.spec.period
        runs: list[list[ChargeLine]] = []
        keys: list[str] = []
        for line in lines:
            key = period_of_ms(period, line.occurred_at_ms).key
            if not keys or keys[-1] != key:
                keys.append(key)
                runs.append([])
            runs[-1].append(line)
        result = ChargeResult(state, 0, 0)
        for run in runs:
            if len(runs) > 1:
                limits = self.limits(budget, from_ms(max(line.occurred_at_ms for line in run)))
            step = apply_charge(
                result.state,
                budget,
                partition,
                run,
                self.late_window,
                effective_limits=None if limits is None else dict(limits),
                newest_trusted_ms=newest_trusted_ms,
            )
            result = _merge(result, step)
        return result

    def charge(
        self,
        stored: StoredLedger,
        budget: Budget,
        charge: BudgetCharged,
        newest_trusted_ms: int | None = None,
    ) -> ChargeOutcome:
        """Fold `charge` into `stored`; `newest_trusted_ms` as in `apply_charge`."""
        lines = [ChargeLine.from_wire(row) for row in charge.lines]
        partition = charge.source_partition
        if not lines:
            result = apply_charge(stored.state, budget, partition, lines, self.late_window)
        else:
            try:
                result = self.fold(stored.state, budget, partition, lines, newest_trusted_ms)
            except OutOfOrderCharge:
                lines = in_position_order(lines)
                result = self.fold(stored.state, budget, partition, lines, newest_trusted_ms)
        crossings = dict(stored.crossings)
        for crossing in result.crossings:
            wire = threshold_event(budget, crossing, policy_hint(budget, crossing))
            wire.update(
                self.forecasts.crossing_fields(
                    budget.budget_id, crossing.period_key, crossing.metric, crossing.limit
                )
            )
            crossings[f"{crossing.period_key}|{crossing.threshold}"] = wire
        live = set(result.state.periods) | set(result.state.crossed)
        crossings = {k: v for k, v in crossings.items() if k.split("|", 1)[0] in live}
        outcome = ChargeOutcome(
            StoredLedger(result.state, crossings),
            lines,
            applied=result.applied,
            skipped=result.skipped,
            late=len(result.late),
        )
        outcome.thresholds = self.unsent(budget.budget_id, crossings)
        if result.state.event_time_high_ms > 0 and not budget.retired:
            # A retired budget's in-flight charge still counts; it routes nothing any more
            # (the proxy matches live budgets only), so no policy is decided for it.
            outcome.policies = self._policies(budget, result.state, result.crossings)
        return outcome

    def _policies(
        self, budget: Budget, state: LedgerState, crossings: list[Crossing]
    ) -> list[dict[str, Any]]:
        """Policy changes in event-time order: one at each crossing of the current period (a
        batch may pass 90 and 100 at once; the proxy should still have seen the demotion),
        then the decision at the ledger's "now"."""
        now = from_ms(state.event_time_high_ms)
        current_key = period_of(budget.spec.period, now).key
        last = self._current_policy(budget.budget_id)
        overrun = self.forecasts.projected_overrun(budget.budget_id, current_key)
        published = []
        candidates = [
            policy_at_crossing(budget, c, overrun) for c in crossings if c.period_key == current_key
        ]
        candidates.append(policy_event(budget, state, now, self.limits(budget, now), overrun))
        for candidate in candidates:
            if should_publish(last, candidate):
                published.append(candidate)
                last = candidate
        return published

    def unsent(self, budget_id: str, crossings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored crossings the thresholds topic does not hold yet, in crossing order."""
        missing = [
            wire
            for wire in crossings.values()
            if not self._emitted(crossing_key(budget_id, wire["period_key"], wire["threshold"]))
        ]
        missing.sort(key=lambda w: (w["crossed_at"], w["threshold"]))
        return missing


def policy_hint(budget: Budget, crossing: Crossing) -> str:
    """The action the policy rules recommend at this crossing's percentage."""
    window = window_of_key(budget.spec.period, crossing.period_key)
    decision = decide(budget, float(crossing.threshold), window, window.end)
    return decision.policy
