"""What a refused request is told: which budget, how much is used, the limit, when it resets.

No major gateway sends `Retry-After` on a budget refusal; we do, computed by the domain's
`retry_after_seconds` from the budget's next reset.
"""

from __future__ import annotations

from datetime import datetime

from services.proxy.enforcement import Verdict
from streams.policy import retry_after_seconds


def retry_after(verdict: Verdict, now: datetime) -> int | None:
    state = verdict.winner
    if state is None or state.reset_at is None:
        return None
    return retry_after_seconds(state.reset_at, now)


def refusal_message(verdict: Verdict, now: datetime) -> str:
    state = verdict.winner
    if state is None:
        return "budget exhausted"
    used = state.consumed + state.forwarded_sum
    metric = state.metric
    text = (
        f"Budget {state.name!r} ({state.budget_id}) is exhausted: {used:,} of {state.limit:,} "
        f"{metric} tokens used in period {state.period_key}"
    )
    if verdict.local_stop:
        text += f", {state.reserved:,} more reserved by requests in flight"
    if state.reset_at is not None:
        seconds = retry_after_seconds(state.reset_at, now)
        text += f". It resets at {state.reset_iso}; retry after {seconds} s."
    else:
        text += ". It does not reset on its own; ask for a larger allocation."
    return text
