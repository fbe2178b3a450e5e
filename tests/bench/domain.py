"""Per-line cost of the hot-path domain calls: apply_charge and match_budgets.

Run on purpose (not collected by pytest): `.venv/bin/python tests/bench/domain.py`. Prints the
figures, then one JSON line. The machine is shared, so read the figures as rough.
"""

from __future__ import annotations

import json
import os
import timeit
from datetime import UTC, datetime, timedelta

from schemas.budgets import BudgetSpec, Limits, Period, Selector
from schemas.usage import UsageRecorded
from streams.budgets import Budget, BudgetIndex
from streams.ledger import ChargeLine, LedgerState, apply_charge
from streams.selectors import match_budgets

BATCH = 500
START_MS = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp() * 1000)


def budget(period: Period, **selector: list[str]) -> Budget:
    spec = BudgetSpec(
        name="bench",
        limits=Limits(total_tokens=10**12, input_tokens=10**12),
        period=period,
        selector=Selector(**selector),
    )
    return Budget("bench", "acme", 1, spec)


def per_line_charge(period: Period, rounds: int = 40) -> float:
    """Microseconds per line: a fresh charge of BATCH lines onto a ledger that has history."""
    b = budget(period)
    state = LedgerState("bench")
    offset = 0
    charges = []
    for _ in range(rounds + 5):
        lines = [
            ChargeLine((offset + i, 0), START_MS + (offset + i) * 1000, 700, 300)
            for i in range(BATCH)
        ]
        offset += BATCH
        charges.append(lines)
    for lines in charges[:5]:
        state = apply_charge(state, b, 0, lines, timedelta(days=2)).state
    timed = charges[5:]

    def run() -> None:
        s = state
        for lines in timed:
            s = apply_charge(s, b, 0, lines, timedelta(days=2)).state

    best = min(timeit.repeat(run, number=1, repeat=5))
    return best / (rounds * BATCH) * 1e6


def per_event_match(n_budgets: int = 20) -> float:
    """Microseconds per event to match against a tenant's `n_budgets` live budgets."""
    period = Period()
    budgets = [
        Budget(f"b{i}", "acme", 1, budget(period, team=[f"t{i % 5}"], tags=["prod"]).spec)
        for i in range(n_budgets)
    ]
    index = BudgetIndex(budgets)
    now = datetime(2026, 11, 27, tzinfo=UTC)
    event = UsageRecorded(
        event_id="e",
        source="s",
        occurred_at=now,
        received_at=now,
        tenant="acme",
        team="t3",
        tags=["prod", "eu"],
        request_model="gpt-4o",
        input_uncached=5,
        output=5,
    )
    number = 20_000
    best = min(timeit.repeat(lambda: match_budgets(index, event), number=number, repeat=5))
    return best / number * 1e6


def main() -> None:
    figures = {
        "apply_charge_us_per_line_month": per_line_charge(Period(kind="month")),
        "apply_charge_us_per_line_day_berlin": per_line_charge(
            Period(kind="day", timezone="Europe/Berlin")
        ),
        "apply_charge_us_per_line_rolling_30d": per_line_charge(
            Period(kind="rolling", window_days=30)
        ),
        "match_budgets_us_per_event_20_budgets": per_event_match(),
    }
    for name, value in figures.items():
        print(f"{name}: {value:.2f}")
    print(f"load average: {os.getloadavg()}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
