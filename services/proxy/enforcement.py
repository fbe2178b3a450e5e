"""The proxy's policy cache and the per-request decision, with in-flight reservations.

The pipeline publishes the budget configs, one `PolicyChanged` per budget (latest wins) and each
threshold crossing; this cache folds them and answers, per request, which policy applies. The
rules themselves are the domain's: `match_budgets` says which budgets a request charges,
`most_restrictive` picks the winner, `retry_after_seconds` says when to come back. What is the
proxy's own is the overshoot bound: for each budget that hard-stops at its limit, the headroom
the last policy or crossing reported, minus what the proxy forwarded since, minus estimates of
the requests still in flight.
A request is refused once that headroom is used up, so N concurrent requests near the limit can
overshoot it by at most one request's estimate (plus the amount by which estimates fall short).

Hot path: the budgets a (key, feature, tags, model, provider) combination matches are computed
once per budget change and memoised, so a decision is a dict lookup and a loop over a few
budgets. Policy changes mutate the budget's state in place and need no invalidation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.signals import PolicyChanged, ThresholdCrossed
from services.proxy.budget_state import BudgetState
from services.proxy.keys import VirtualKey
from streams.budgets import Budget, BudgetIndex, apply_budget_event
from streams.errors import BudgetNotFound, StaleRevision
from streams.periods import next_reset
from streams.policy import PolicyDecision, most_restrictive
from streams.selectors import match_budgets

_MEMO_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class MatchView:
    """The attribution of a request, shaped like the `UsageRecorded` fields selectors read."""

    tenant: str
    team: str | None
    feature: str | None
    user: str | None
    virtual_key: str | None
    provider: str | None
    request_model: str | None
    tags: tuple[str, ...]
    response_model: str | None = None


@dataclass(slots=True)
class Verdict:
    """What to do with one request, and what it holds until it is settled."""

    policy: str
    winner: BudgetState | None
    tightest: BudgetState | None
    matched: tuple[BudgetState, ...]
    reservations: list[tuple[BudgetState, int]]
    local_stop: bool = False
    remaining: int = 0
    """The tightest budget's headroom as this request found it (before its own reservation)."""

    def target_model(self, model: str | None) -> str | None:
        """The model a degraded request goes to (None: leave it as it is)."""
        decision = self.winner.decision if self.winner is not None else None
        if decision is None:
            return None
        mapped = decision.model_map.get(model) if model else None
        return mapped or decision.target_model


ALLOW = Verdict("allow", None, None, (), [])


class PolicyCache:
    """Budgets and policies as last read from Kafka, and the decision over them."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        """Seconds since the epoch: a crossing dated later waits for its time."""
        self.index = BudgetIndex()
        self.states: dict[str, BudgetState] = {}
        self._memo: dict[tuple[object, ...], tuple[BudgetState, ...]] = {}
        self._winners: dict[
            int, tuple[tuple[BudgetState, ...], tuple[PolicyDecision | None, ...], BudgetState]
        ] = {}
        self._held_crossings: dict[str, ThresholdCrossed] = {}
        self.caught_up = False

    # -- feeding ------------------------------------------------------------------------------

    def apply_budget(self, event: BudgetDefined | BudgetAmended | BudgetRetired) -> None:
        """Fold a config event. The compacted topic keeps only each budget's latest event, so a
        lone amendment (or a gap) takes the event's full spec as the budget's current state."""
        current = self.index.get(event.budget_id)
        budget: Budget | None
        try:
            budget = apply_budget_event(current, event)
        except StaleRevision as exc:
            if exc.already_applied:
                return
            budget = _latest(current, event)
        except BudgetNotFound:
            budget = _latest(current, event)
        if budget is None:
            return
        self.index = self.index.with_budget(budget)
        state = self.states.get(budget.budget_id)
        if state is not None:
            state.name = budget.spec.name if budget.spec is not None else state.name
        self._memo.clear()
        self._winners.clear()
        held = self._held_crossings.pop(budget.budget_id, None)
        if held is not None:
            self.apply_crossing(held)

    def apply_policy(self, event: PolicyChanged) -> None:
        self._state(event.budget_id).apply(event)

    def apply_crossing(self, event: ThresholdCrossed) -> None:
        budget = self.index.get(event.budget_id)
        if budget is None:
            # Topics are read side by side: the config may come later. Keep the newest.
            held = self._held_crossings.get(event.budget_id)
            if held is None or held.crossed_at < event.crossed_at:
                self._held_crossings[event.budget_id] = event
            return
        if budget.tenant != event.tenant:
            return
        reset_at = next_reset(budget.spec.period, event.crossed_at)
        state = self._state(event.budget_id)
        if event.crossed_at.timestamp() > self.clock():
            state.defer_crossing(event, budget.revision)
        else:
            state.apply_crossing(event, reset_at, budget.spec.at_limit)

    def _catch_up(self, state: BudgetState, now_ms: int) -> None:
        """Apply `state`'s deferred crossings whose time has come, with the budget's settings
        as they are now (an amendment since may have changed its action or its period)."""
        budget = self.index.get(state.budget_id)
        if budget is None:
            state.pending.clear()
            return
        for event in state.take_due(now_ms, budget.revision):
            reset_at = next_reset(budget.spec.period, event.crossed_at)
            state.apply_crossing(event, reset_at, budget.spec.at_limit)

    def _state(self, budget_id: str) -> BudgetState:
        state = self.states.get(budget_id)
        if state is None:
            budget = self.index.get(budget_id)
            name = budget.spec.name if budget is not None else budget_id
            state = self.states[budget_id] = BudgetState(budget_id, name)
        return state

    # -- deciding -----------------------------------------------------------------------------

    def matched(
        self,
        key: VirtualKey,
        feature: str | None,
        tags: tuple[str, ...],
        model: str | None,
        provider: str,
    ) -> tuple[BudgetState, ...]:
        memo_key = (key.key_id, feature, tags, model, provider)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        view = MatchView(key.tenant, key.team, feature, key.user, key.key_id, provider, model, tags)
        states = []
        for budget in match_budgets(self.index, view):
            state = self.states.get(budget.budget_id)
            if state is None:
                state = self.states[budget.budget_id] = BudgetState(
                    budget.budget_id, budget.spec.name
                )
            states.append(state)
        found = tuple(states)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
            self._winners.clear()
        self._memo[memo_key] = found
        return found

    def decide(
        self, matched: tuple[BudgetState, ...], estimate_in: int, estimate_out: int, now_ms: int
    ) -> Verdict:
        """The policy for a request matching `matched`; reserves its estimate where needed."""
        if not matched:
            return ALLOW
        live: list[BudgetState] = []
        tightest: BudgetState | None = None
        stop: BudgetState | None = None
        least = 0
        for state in matched:
            if state.pending and state.pending[0][0] <= now_ms:
                self._catch_up(state, now_ms)
            decision = state.decision
            if decision is None or now_ms >= state.reset_ms:
                continue  # no verdict yet, or its period has reset since
            live.append(state)
            headroom = state.remaining - state.forwarded_sum - state.reserved
            if tightest is None or headroom < least:
                tightest, least = state, headroom
            if headroom <= 0 and stop is None and state.guarded and decision.policy != "hard_stop":
                stop = state
        if not live:
            return Verdict("allow", None, None, matched, [])
        if stop is not None:
            return Verdict("hard_stop", stop, tightest, matched, [], True, least)
        winner = live[0] if len(live) == 1 else self._winner(matched, live, tightest)
        policy = winner.decision.policy if winner.decision is not None else "allow"
        reservations: list[tuple[BudgetState, int]] = []
        if policy != "hard_stop":
            for state in live:
                if state.guarded:
                    metric = state.metric
                    amount = (
                        estimate_in + estimate_out
                        if metric == "total"
                        else estimate_in
                        if metric == "input"
                        else estimate_out
                    )
                    state.reserved += amount
                    reservations.append((state, amount))
        return Verdict(policy, winner, tightest, matched, reservations, False, least)

    def _winner(
        self,
        matched: tuple[BudgetState, ...],
        live: list[BudgetState],
        fallback: BudgetState | None,
    ) -> BudgetState:
        """The budget whose decision `most_restrictive` picks, remembered per matched set until
        one of its decisions changes (ties are broken by comparing serialised decisions, too
        slow to redo per request)."""
        decisions = tuple(state.decision for state in live)
        entry = self._winners.get(id(matched))
        if entry is not None and entry[0] is matched and entry[1] == decisions:
            return entry[2]
        best = most_restrictive(d for d in decisions if d is not None)
        winner = next((s for s in live if s.decision is best), fallback or live[0])
        self._winners[id(matched)] = (matched, decisions, winner)
        return winner

    def settle(self, verdict: Verdict, input_total: int, output: int, occurred_ms: int) -> None:
        """Release the request's reservations and count what it really used."""
        for state, amount in verdict.reservations:
            state.reserved -= amount
        verdict.reservations.clear()
        for state in verdict.matched:
            if state.decision is not None:
                state.record(occurred_ms, _by_metric(state.metric, input_total, output))


def _by_metric(metric: str, input_tokens: int, output_tokens: int) -> int:
    if metric == "input":
        return input_tokens
    if metric == "output":
        return output_tokens
    return input_tokens + output_tokens


def _latest(
    current: Budget | None, event: BudgetDefined | BudgetAmended | BudgetRetired
) -> Budget | None:
    if current is not None and event.revision <= current.revision:
        return None
    if isinstance(event, BudgetRetired):
        if current is None:
            return None
        return Budget(current.budget_id, current.tenant, event.revision, current.spec, True)
    return Budget(event.budget_id, event.tenant, event.revision, event.spec, False)
