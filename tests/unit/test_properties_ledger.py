"""Properties of resolve + ledger under at-least-once delivery.

A usage log (per source partition, envelopes of events, some events produced twice) is
delivered in batches that re-send an arbitrary tail of what was already delivered, cut at
arbitrary positions, with the partitions interleaved at random. A small model of the resolve
stage (dedupe by first sighting, tenant-scoped budget matching) turns each batch into charges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.budgets import BudgetSpec, Limits, Metric, Period, Selector
from schemas.usage import UsageRecorded
from streams.budgets import Budget, BudgetIndex
from streams.dedupe import classify
from streams.ledger import ChargeLine, LedgerState, apply_charge
from streams.selectors import match_budgets
from streams.thresholds import Crossing

START = int(datetime(2026, 10, 29, tzinfo=UTC).timestamp() * 1000)
SPAN = 6 * 86_400_000  # crosses a month end and New York's fall-back night
PERIODS = [
    Period(kind="day"),
    Period(kind="day", timezone="Europe/Berlin"),
    Period(kind="week", timezone="America/New_York"),
    Period(kind="month", timezone="Pacific/Chatham"),
    Period(kind="rolling", timezone="Asia/Kathmandu", window_days=3),
]
Position = tuple[int, int]


@dataclass
class Scenario:
    events: list[UsageRecorded]
    logs: dict[int, list[tuple[Position, int]]]  # partition -> [(position, event number)]
    batches: list[tuple[int, int, int, int]]  # (partition, start, first new, end) into the log
    budgets: list[Budget]


def usage(number: int, at_ms: int, team: str, tenant: str, inp: int, out: int) -> UsageRecorded:
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    return UsageRecorded(
        event_id=f"e{number}",
        source="test",
        occurred_at=at,
        received_at=at,
        tenant=tenant,
        team=team,
        input_uncached=inp,
        output=out,
    )


@st.composite
def scenarios(draw: Any) -> Scenario:
    n = draw(st.integers(1, 30))
    events = []
    for number in range(n):
        at_ms = START + draw(st.integers(0, SPAN // 1000)) * 1000
        team = draw(st.sampled_from(["a", "b"]))
        tenant = draw(st.sampled_from(["acme", "acme", "other"]))
        events.append(
            usage(number, at_ms, team, tenant, draw(st.integers(0, 400)), draw(st.integers(0, 400)))
        )
    partition_of = [draw(st.integers(0, 1)) for _ in range(n)]
    copies = draw(st.lists(st.integers(0, n - 1), max_size=8))
    order = draw(st.permutations(list(range(n)) + copies))
    logs: dict[int, list[tuple[Position, int]]] = {}
    for p in (0, 1):
        numbers = [e for e in order if partition_of[e] == p]
        offset, index, log = 100, 0, []
        for e in numbers:
            log.append(((offset, index), e))
            if draw(st.integers(0, 2)) == 0 or index == 2:
                offset, index = offset + 1, 0
            else:
                index += 1
        logs[p] = log
    plans: dict[int, list[tuple[int, int, int]]] = {}
    for p, log in logs.items():
        reached, plan = 0, []
        while reached < len(log):
            start = reached - draw(st.integers(0, min(reached, 6)))
            end = min(len(log), reached + draw(st.integers(1, 6)))
            plan.append((start, reached, end))
            reached = end
        plans[p] = plan
    batches = []
    while any(plans.values()):
        p = draw(st.sampled_from([q for q in (0, 1) if plans[q]]))
        batches.append((p, *plans[p].pop(0)))
    period = draw(st.sampled_from(PERIODS))
    thresholds = [50, 75, 90, 100, 150]
    specs = [
        ("team-a", "acme", Selector(team=["a"])),
        ("all", "acme", Selector()),
        ("other", "other", Selector()),
    ]
    budgets = [
        Budget(
            bid,
            tenant,
            1,
            BudgetSpec(
                name=bid,
                selector=sel,
                period=period,
                limits=Limits(total_tokens=2000, input_tokens=1500),
                thresholds=thresholds,
            ),
        )
        for bid, tenant, sel in specs
    ]
    return Scenario(events, logs, batches, budgets)


def run(
    s: Scenario,
    late_window: timedelta,
    clean: bool = False,
    limits: list[dict[Metric, int] | None] | None = None,
) -> tuple[dict[str, LedgerState], list[tuple[str, Crossing]], Counter[tuple[str, str]]]:
    """Deliver the batches (or, if `clean`, only each batch's new lines) through resolve+ledger."""
    index = BudgetIndex(s.budgets)
    states = {b.budget_id: LedgerState(b.budget_id) for b in s.budgets}
    first_seen: dict[str, Position] = {}
    crossings: list[tuple[str, Crossing]] = []
    outcome: Counter[tuple[str, str]] = Counter()
    for number, (p, start, first_new, end) in enumerate(s.batches):
        lines: dict[str, list[ChargeLine]] = {}
        for position, e in s.logs[p][first_new if clean else start : end]:
            event = s.events[e]
            sighting = classify(first_seen.get(event.event_id), position)
            if sighting == "new":
                first_seen[event.event_id] = position
            if sighting == "duplicate":
                continue
            for budget in match_budgets(index, event):
                if budget.tenant != event.tenant:
                    raise AssertionError("a budget of another tenant matched")
                at_ms = int(event.occurred_at.timestamp() * 1000)
                line = ChargeLine(position, at_ms, event.input_total, event.output)
                lines.setdefault(budget.budget_id, []).append(line)
        for budget in s.budgets:
            if budget.budget_id not in lines:
                continue
            effective = None if limits is None else limits[number % len(limits)]
            result = apply_charge(
                states[budget.budget_id],
                budget,
                p,
                lines[budget.budget_id],
                late_window,
                effective,
            )
            states[budget.budget_id] = result.state
            crossings.extend((budget.budget_id, c) for c in result.crossings)
            outcome["applied", budget.budget_id] += result.applied
            outcome["late", budget.budget_id] += len(result.late)
    return states, crossings, outcome


def expected_key(period: Period, at: datetime) -> str:
    local = at.astimezone(ZoneInfo(period.timezone)).date()
    if period.kind in ("day", "rolling"):
        return local.isoformat()
    if period.kind == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{local.year}-{local.month:02d}"


@settings(max_examples=200, deadline=None)
@given(s=scenarios())
def test_consumption_is_the_sum_of_distinct_matching_events(s: Scenario) -> None:
    states, _, _ = run(s, timedelta(days=400))
    for budget in s.budgets:
        expected: dict[str, list[int]] = {}
        for event in s.events:
            if event.tenant != budget.tenant or not budget.matcher(event):
                continue
            key = expected_key(budget.spec.period, event.occurred_at)
            totals = expected.setdefault(key, [0, 0, 0])
            totals[0] += event.input_total
            totals[1] += event.output
            totals[2] += 1
        got = {
            k: [v.input, v.output, v.events] for k, v in states[budget.budget_id].periods.items()
        }
        assert got == expected
        assert all(v.total == v.input + v.output for v in states[budget.budget_id].periods.values())


@settings(max_examples=200, deadline=None)
@given(s=scenarios(), late=st.sampled_from([timedelta(0), timedelta(hours=5), timedelta(days=1)]))
def test_redelivery_and_duplicates_change_nothing(s: Scenario, late: timedelta) -> None:
    redelivered = run(s, late)
    once = run(s, late, clean=True)
    assert redelivered[0] == once[0]
    assert redelivered[1] == once[1]
    # Nothing accepted is lost: every distinct matching event is charged or reported late.
    for budget in s.budgets:
        matching = sum(1 for e in s.events if e.tenant == budget.tenant and budget.matcher(e))
        applied = redelivered[2]["applied", budget.budget_id]
        late_count = redelivered[2]["late", budget.budget_id]
        assert applied + late_count == matching
        assert redelivered[0][budget.budget_id].late_events == late_count


@settings(max_examples=200, deadline=None)
@given(
    s=scenarios(),
    late=st.sampled_from([timedelta(0), timedelta(days=1), timedelta(days=400)]),
    limits=st.lists(
        st.sampled_from([None, {"total": 700}, {"input": 300, "output": 5000}]),
        min_size=1,
        max_size=3,
    ),
)
def test_a_threshold_fires_at_most_once_per_budget_and_period(
    s: Scenario, late: timedelta, limits: list[dict[Metric, int] | None]
) -> None:
    states, crossings, _ = run(s, late, limits=limits)
    seen = Counter((bid, c.period_key, c.threshold) for bid, c in crossings)
    assert all(count == 1 for count in seen.values())
    for _bid, c in crossings:
        assert c.consumed * 100 >= c.threshold * c.limit
    for bid, state in states.items():
        for key, fired in state.crossed.items():
            assert fired == sorted(set(fired))
            emitted = {c.threshold for b, c in crossings if b == bid and c.period_key == key}
            assert emitted == set(fired)
