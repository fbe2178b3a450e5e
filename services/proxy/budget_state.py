"""What the proxy knows about one budget's position against its limit, and how it learns it.

Two signals feed it: the pipeline's `PolicyChanged` (the decision, with consumption at that
moment) and `ThresholdCrossed` (consumption at each crossing, also while the policy is still
`allow`, which the pipeline does not announce). Between signals the proxy adds what it has
forwarded itself since the last one, and what requests in flight have reserved.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from schemas.signals import PolicyChanged, ThresholdCrossed
from streams.periods import to_ms
from streams.policy import PolicyDecision

_BUCKET_MS = 1000
_MAX_BUCKETS = 4096  # about an hour of continuous traffic in one-second buckets


class BudgetState:
    """What the proxy knows about one budget's position against its limit, right now."""

    __slots__ = (
        "at_limit",
        "budget_id",
        "consumed",
        "decision",
        "effective_ms",
        "forwarded",
        "forwarded_sum",
        "guarded",
        "limit",
        "metric",
        "name",
        "pending",
        "period_key",
        "remaining",
        "reserved",
        "reset_at",
        "reset_iso",
        "reset_ms",
    )

    def __init__(self, budget_id: str, name: str) -> None:
        self.budget_id = budget_id
        self.name = name
        self.decision: PolicyDecision | None = None
        self.at_limit = "alert_only"
        self.guarded = False
        self.metric = "total"
        self.period_key = ""
        self.consumed = 0
        self.limit = 0
        self.remaining = 0
        self.reset_at: datetime | None = None
        self.reset_iso = ""
        self.reset_ms = 1 << 62
        self.effective_ms = 0
        self.forwarded: deque[tuple[int, int, int]] = deque()
        self.pending: list[tuple[int, ThresholdCrossed, int]] = []
        """Crossings dated ahead of the proxy's clock (the next period's, from a line stamped
        into it), with the budget revision they were read under, by date; applied once their
        time comes (`PolicyCache.decide`)."""
        self.forwarded_sum = 0
        self.reserved = 0

    def headroom(self) -> int:
        """Remaining tokens once what was forwarded since the policy and in-flight are counted."""
        return self.remaining - self.forwarded_sum - self.reserved

    def apply(self, event: PolicyChanged) -> None:
        """The pipeline's decision. Its consumption figures replace ours unless a threshold
        crossing of the same period already told us something newer. A decision for another
        period older than what we hold is a previous period's, read after this one's crossings
        (topics are read side by side after a restart): it is not the state any more."""
        effective_ms = to_ms(event.effective_at)
        if event.period_key != self.period_key and effective_ms < self.effective_ms:
            return
        self.decision = PolicyDecision(
            policy=event.policy,
            reason=event.reason,
            target_model=event.target_model,
            model_map=dict(event.model_map),
            reset_at=event.reset_at,
            concise_prompt=event.concise_prompt,
            cache_ttl_seconds=event.cache_ttl_seconds,
            budget_id=event.budget_id,
            tenant=event.tenant,
            period_key=event.period_key,
            at_limit=event.at_limit,
            metric=event.metric,
            consumed=event.consumed,
            limit=event.limit,
        )
        self.at_limit = event.at_limit
        self.guarded = event.at_limit == "hard_stop"  # reservations bound its overshoot
        if event.period_key != self.period_key or effective_ms >= self.effective_ms:
            self.period_key = event.period_key
            self.metric = event.metric or "total"
            self._figures(event.consumed, event.limit, event.remaining, effective_ms)
        self._reset(event.reset_at)

    def apply_crossing(self, event: ThresholdCrossed, reset_at: datetime, at_limit: str) -> None:
        """A threshold crossing carries the consumption at that moment. The pipeline announces
        no policy while a budget is below its line (`allow`), so without crossings the proxy
        would know nothing of a hard-stop budget at 99 percent and could not bound overshoot."""
        crossed_ms = to_ms(event.crossed_at)
        if crossed_ms <= self.effective_ms:
            return
        if self.decision is None or event.period_key != self.period_key:
            self.decision = PolicyDecision(
                policy="allow",
                reason=f"{event.threshold}% of the {event.metric} limit crossed",
                reset_at=reset_at,
                budget_id=event.budget_id,
                tenant=event.tenant,
                period_key=event.period_key,
                at_limit=at_limit,  # type: ignore[arg-type]
                metric=event.metric,
                consumed=event.consumed,
                limit=event.limit,
            )
            self.at_limit = at_limit
            self.guarded = at_limit == "hard_stop"
            self.period_key = event.period_key
            self.metric = event.metric
            self._reset(reset_at)
        elif event.metric != self.metric:
            return  # the figures we hold are for the budget's tightest metric
        elif event.consumed < self.consumed:
            return  # within a period consumption only grows: a crossing dated late is older
        self._figures(event.consumed, event.limit, event.limit - event.consumed, crossed_ms)

    def defer_crossing(self, event: ThresholdCrossed, revision: int) -> None:
        """Keep a crossing dated ahead of now until its time (a next period's crossing must not
        judge this period's traffic)."""
        self.pending.append((to_ms(event.crossed_at), event, revision))
        self.pending.sort(key=lambda held: held[0])

    def take_due(self, now_ms: int, revision: int) -> list[ThresholdCrossed]:
        """The deferred crossings whose time has come, read under budget `revision` (one read
        under another is stale: the worker re-decides an amended budget), and of those only the
        one with the most consumption per period: a period's crossings from lines stamped into
        it all carry its start as their date, and only the last tells where it stands."""
        due = [held for held in self.pending if held[0] <= now_ms]
        self.pending = self.pending[len(due) :]
        latest: dict[str, ThresholdCrossed] = {}
        for _, event, read_under in due:
            best = latest.get(event.period_key)
            if read_under == revision and (best is None or event.consumed > best.consumed):
                latest[event.period_key] = event
        return sorted(latest.values(), key=lambda event: event.crossed_at)

    def _figures(self, consumed: int, limit: int, remaining: int, effective_ms: int) -> None:
        self.consumed, self.limit, self.remaining = consumed, limit, max(0, remaining)
        self.effective_ms = effective_ms
        forwarded = self.forwarded
        while forwarded and forwarded[0][1] <= effective_ms:
            self.forwarded_sum -= forwarded.popleft()[2]

    def _reset(self, reset_at: datetime | None) -> None:
        self.reset_at = reset_at
        self.reset_iso = reset_at.isoformat().replace("+00:00", "Z") if reset_at else ""
        self.reset_ms = to_ms(reset_at) if reset_at else 1 << 62

    def record(self, occurred_ms: int, tokens: int) -> None:
        """Count tokens the proxy forwarded after the last signal.

        Entries are one-second buckets (start, latest, tokens); beyond a cap of about an hour
        of buckets the oldest two merge. A signal forgets the buckets it covers entirely, so a
        merged bucket is forgotten later, never sooner: the headroom errs on the safe side.
        """
        if not tokens or occurred_ms <= self.effective_ms:
            return
        self.forwarded_sum += tokens
        forwarded = self.forwarded
        if forwarded:
            start, latest, held = forwarded[-1]
            if 0 <= occurred_ms - start < _BUCKET_MS or start - _BUCKET_MS < occurred_ms < start:
                forwarded[-1] = (min(start, occurred_ms), max(latest, occurred_ms), held + tokens)
                return
        forwarded.append((occurred_ms, occurred_ms, tokens))
        if len(forwarded) > _MAX_BUCKETS:
            first_start, _, first = forwarded.popleft()
            _, second_latest, second = forwarded[0]
            forwarded[0] = (first_start, second_latest, first + second)
