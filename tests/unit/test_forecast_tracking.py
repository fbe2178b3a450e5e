"""The forecast agent's daily history, fed by the ledger agent (no broker).

- `add_lines` sums runs of lines per local day; it must equal a per-line fold exactly, also
  across local midnights, DST changes and a watermark in the middle of a charge.
- `Forecaster.stored` reuses a decoded `UsageDays` only while the table holds the bytes it
  was decoded from: after a recovery (older, equal or missing value) it reads the table again,
  so redelivered lines are still skipped exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import BudgetSpec, Limits, Period
from streams.budgets import Budget, BudgetIndex
from streams.faust.app import WorkerConfig, build_app
from streams.faust.forecasting import ForecastConfig, Forecaster
from streams.forecast.usage_days import UsageDays, add_lines
from streams.ledger import ChargeLine
from streams.periods import period_of, to_ms

ZONE = "America/New_York"
START = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)  # DST ends in New York on Nov 1


def _reference(state: UsageDays, source_partition: int, lines: list[ChargeLine]) -> UsageDays:
    """The fold as it reads in words: each line above the watermark, on its own local day."""
    days = dict(state.days)
    mark = state.watermarks.get(source_partition)
    for line in lines:
        if mark is not None and line.position <= mark:
            continue
        at = START + timedelta(milliseconds=line.occurred_at_ms - to_ms(START))
        key = period_of(Period(kind="day", timezone=ZONE), at).key
        old = days.get(key, (0, 0))
        days[key] = (old[0] + line.input, old[1] + line.output)
        mark = line.position
    if mark is None:
        return state
    return UsageDays(state.budget_id, days, {**state.watermarks, source_partition: mark})


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 3 * 3_600_000), st.integers(0, 500), st.integers(0, 500)),
        min_size=1,
        max_size=40,
    ),
    cut=st.integers(0, 40),
    mark=st.integers(-1, 40),
)
def test_runs_per_day_equal_the_per_line_fold(
    steps: list[tuple[int, int, int]], cut: int, mark: int
) -> None:
    at = to_ms(START)
    lines = []
    for i, (gap, tokens_in, tokens_out) in enumerate(steps):
        at += gap  # up to three hours apart: runs of one day, midnights and the DST hour
        lines.append(ChargeLine((i, 0), at, tokens_in, tokens_out))
    state = UsageDays("b", {"2026-10-30": (7, 7)}, {} if mark < 0 else {0: (mark, 0)})
    first = add_lines(state, ZONE, 0, lines[:cut])
    assert first == _reference(state, 0, lines[:cut])
    # The whole charge again (a redelivery cut elsewhere): only what is new is added.
    assert add_lines(first, ZONE, 0, lines) == _reference(state, 0, lines)


def _budget(limit: int) -> Budget:
    spec = BudgetSpec(
        name="copilot", limits=Limits(total_tokens=limit), period=Period(timezone=ZONE)
    )
    return Budget("acme/copilot", "acme", 1, spec)


def _forecaster(tmp_path: Path, budget: Budget) -> tuple[Forecaster, Any]:
    config = WorkerConfig("127.0.0.1:9092", "unit", tmp_path, store="memory")
    app = build_app(config)  # nothing connects until the app starts
    charges = app.topic("unit.charges", key_serializer="raw", value_serializer="raw")
    index = BudgetIndex([budget])
    forecaster = Forecaster(app, charges, charges, lambda: index, ForecastConfig(processes=0))
    table = forecaster.days
    # The table's memory store hands back the very bytes object written to it; a plain dict
    # does the same and needs no changelog producer.
    table.data[b"probe"] = raw = orjson.dumps({"budget_id": "probe"})
    assert table.get(b"probe") is raw
    forecaster.days = {}
    return forecaster, forecaster.days


def _lines(first: int, count: int, tokens: int) -> list[ChargeLine]:
    at = to_ms(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    return [ChargeLine((first + i, 0), at + i, tokens, 0) for i in range(count)]


def test_decoded_days_follow_the_table_through_a_recovery(tmp_path: Path) -> None:
    budget = _budget(10_000)
    forecaster, table = _forecaster(tmp_path, budget)
    key = budget.budget_id.encode()

    forecaster.track(budget, 0, _lines(0, 10, 100))  # offsets 0-9: 1,000 tokens
    older = table[key]
    assert forecaster.stored(budget.budget_id) is forecaster.stored(budget.budget_id)
    forecaster.track(budget, 0, _lines(10, 10, 100))  # offsets 10-19
    assert forecaster.stored(budget.budget_id).days == {"2026-11-20": (2000, 0)}

    # A crash before the second write reached the changelog: recovery restores the older
    # value (a new bytes object). The decoded newer days must not be used.
    table[key] = orjson.dumps(orjson.loads(older))
    assert forecaster.stored(budget.budget_id).days == {"2026-11-20": (1000, 0)}
    # The ledger agent reads the charges again from the committed offset: 5-19 are redelivered.
    forecaster.track(budget, 0, _lines(5, 15, 100))
    assert forecaster.stored(budget.budget_id).days == {"2026-11-20": (2000, 0)}

    # An equal value restored from the changelog is read again and gives the same days.
    current = forecaster.stored(budget.budget_id)
    table[key] = orjson.dumps(orjson.loads(table[key]))
    assert forecaster.stored(budget.budget_id) == current
    # A partition moved away and back empty: nothing stale comes back either.
    del table[key]
    assert forecaster.stored(budget.budget_id).days == {}


def test_a_tracked_charge_that_crosses_a_threshold_queues_its_budget(tmp_path: Path) -> None:
    budget = _budget(10_000)
    forecaster, _ = _forecaster(tmp_path, budget)
    forecaster.track(budget, 0, _lines(0, 10, 700))  # 70%
    assert forecaster.pending == set()
    forecaster.track(budget, 0, _lines(10, 1, 700))  # 77%: crosses 75
    assert forecaster.pending == {budget.budget_id}


def test_a_failure_in_the_history_never_reaches_the_ledger_agent(
    tmp_path: Path, caplog: Any, monkeypatch: Any
) -> None:
    budget = _budget(10_000)
    forecaster, table = _forecaster(tmp_path, budget)
    table[budget.budget_id.encode()] = b"not json"  # a value no fold can read
    forecaster.track(budget, 0, _lines(0, 1, 100))  # logged, not raised
    assert "charge not tracked for forecasting" in caplog.text

    def bug(*args: Any) -> UsageDays:
        raise RuntimeError("a bug in the fold")

    del table[budget.budget_id.encode()]
    monkeypatch.setattr("streams.faust.forecasting.add_lines", bug)
    forecaster.track(budget, 0, _lines(0, 1, 100))  # not even an unexpected error escapes
    assert "a bug in the fold" in caplog.text
