"""The ledger fold: per-budget, per-period consumption, exact under redelivery.

Exactness rests on two facts the adapters guarantee: every usage event has a position unique in
its source partition, and the lines of one (budget, source partition) arrive in position order.
The state then only needs the highest position applied per source partition (`watermarks`): a
redelivered batch, cut wherever, is skipped line by line up to it and applied above it.

Lines are charged by event time. "Now" is the highest event time the ledger has applied
(`event_time_high_ms`), never the wall clock, so a replay of the same lines decides lateness,
pruning and crossings exactly as the first run did. Lines too late to charge are counted and
handed back, never dropped silently. An event time is a source's claim, so the caller may bound
"now" by the newest time it trusts (`newest_trusted_ms`): one line stamped a year ahead then
cannot close the current period and make every real line after it late.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.budgets import Metric
from streams.budgets import Budget
from streams.errors import BudgetIdMismatch, InvalidState, OutOfOrderCharge
from streams.periods import day_key, parse_key, period_of, period_of_ms, window_of_key
from streams.thresholds import Crossing, consumed_of, new_crossings, usage_percent

Position = tuple[int, int]
"""(source offset, index inside an envelope): unique within a source partition of usage."""

_NEVER = 1 << 62  # a token level no consumption reaches: the metric is not limited
_ONE_MS = timedelta(milliseconds=1)
_NO_CAP = 1 << 62  # an event time no line reaches (year ~146 million): "now" is not capped


def _invalid(kind: str, exc: Exception) -> InvalidState:
    if isinstance(exc, KeyError):
        return InvalidState(kind, str(exc.args[0]), "is required")
    return InvalidState(kind, "(payload)", str(exc))


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One usage event as charged to one budget: `input` is its input_total."""

    position: Position
    occurred_at_ms: int
    input: int
    output: int

    @classmethod
    def from_wire(cls, row: Sequence[int]) -> ChargeLine:
        """From the compact `[offset, index, occurred_at_ms, input, output]` of BudgetCharged.

        Every charged usage event passes here once per budget. The frozen dataclass `__init__`
        goes through `object.__setattr__` per field; the slots' own setters cost half that. The
        row was validated with its message (schemas.charges), so nothing is checked again.
        """
        line = _NEW(cls)
        _SET_POSITION(line, (row[0], row[1]))
        _SET_OCCURRED_AT(line, row[2])
        _SET_INPUT(line, row[3])
        _SET_OUTPUT(line, row[4])
        return line

    def to_wire(self) -> list[int]:
        return [self.position[0], self.position[1], self.occurred_at_ms, self.input, self.output]

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": list(self.position),
            "occurred_at_ms": self.occurred_at_ms,
            "input": self.input,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChargeLine:
        try:
            offset, index = data["position"]
            return cls(
                (int(offset), int(index)),
                int(data["occurred_at_ms"]),
                int(data["input"]),
                int(data["output"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid("ChargeLine", exc) from None


_NEW = object.__new__
_SET_POSITION = ChargeLine.__dict__["position"].__set__
_SET_OCCURRED_AT = ChargeLine.__dict__["occurred_at_ms"].__set__
_SET_INPUT = ChargeLine.__dict__["input"].__set__
_SET_OUTPUT = ChargeLine.__dict__["output"].__set__


@dataclass(frozen=True, slots=True)
class PeriodTotals:
    """Tokens and events charged to one period (or one rolling day bucket)."""

    input: int
    output: int
    total: int
    events: int

    def to_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "total": self.total,
            "events": self.events,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PeriodTotals:
        try:
            inp, out = int(data["input"]), int(data["output"])
            return cls(inp, out, int(data.get("total", inp + out)), int(data["events"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid("PeriodTotals", exc) from None


@dataclass(frozen=True, slots=True)
class LedgerState:
    """One budget's ledger. Treat the dicts as read-only: `apply_charge` returns new ones.

    `watermarks[p]` is the highest position of source partition `p` already applied (or counted
    late); `crossed[key]` the thresholds that fired in that period, in increasing order.
    """

    budget_id: str
    periods: dict[str, PeriodTotals] = field(default_factory=dict)
    watermarks: dict[int, Position] = field(default_factory=dict)
    crossed: dict[str, list[int]] = field(default_factory=dict)
    event_time_high_ms: int = 0
    late_events: int = 0
    late_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_id": self.budget_id,
            "periods": {k: v.to_dict() for k, v in self.periods.items()},
            "watermarks": {str(p): list(pos) for p, pos in self.watermarks.items()},
            "crossed": {k: list(v) for k, v in self.crossed.items()},
            "event_time_high_ms": self.event_time_high_ms,
            "late_events": self.late_events,
            "late_tokens": self.late_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerState:
        try:
            return cls(
                budget_id=str(data["budget_id"]),
                periods={k: PeriodTotals.from_dict(v) for k, v in data["periods"].items()},
                watermarks={
                    int(p): (int(pos[0]), int(pos[1])) for p, pos in data["watermarks"].items()
                },
                crossed={k: [int(t) for t in v] for k, v in data["crossed"].items()},
                event_time_high_ms=int(data["event_time_high_ms"]),
                late_events=int(data["late_events"]),
                late_tokens=int(data["late_tokens"]),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise _invalid("LedgerState", exc) from None


@dataclass(frozen=True, slots=True)
class ChargeResult:
    """The new state and what happened to each line of the charge."""

    state: LedgerState
    applied: int
    skipped: int
    late: list[ChargeLine] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.to_dict(),
            "applied": self.applied,
            "skipped": self.skipped,
            "late": [line.to_dict() for line in self.late],
            "crossings": [c.to_dict() for c in self.crossings],
        }


def _levels(
    thresholds: tuple[int, ...], crossed: Sequence[int], limits: Mapping[Metric, int]
) -> tuple[int, int, int] | None:
    """Token levels (input, output, total) at which the next unfired threshold fires.

    Integer arithmetic (`consumed * 100 >= t * limit`) keeps the per-line check exact and cheap.
    """
    nxt = next((t for t in thresholds if t not in crossed), None)
    if nxt is None:
        return None
    result = []
    metric: Metric
    for metric in ("input", "output", "total"):
        limit = limits.get(metric)
        result.append(_NEVER if limit is None else (nxt * limit + 99) // 100)
    return result[0], result[1], result[2]


def _rolling_sum(
    ordinal: int,
    window_days: int,
    work: dict[str, list[int]],
    periods: Mapping[str, PeriodTotals],
) -> list[int]:
    total = [0, 0]
    for o in range(ordinal - window_days + 1, ordinal + 1):
        key = day_key(o)
        acc = work.get(key)
        if acc is not None:
            total[0] += acc[0]
            total[1] += acc[1]
        elif (stored := periods.get(key)) is not None:
            total[0] += stored.input
            total[1] += stored.output
    return total


def apply_charge(
    state: LedgerState,
    budget: Budget,
    source_partition: int,
    lines: Sequence[ChargeLine],
    late_window: timedelta,
    effective_limits: Mapping[Metric, int] | None = None,
    newest_trusted_ms: int | None = None,
) -> ChargeResult:
    """Fold one charge (lines of one source partition, in position order) into the ledger.

    Lines at or below the partition's watermark are skipped; a line whose period ended more than
    `late_window` (negative reads as zero) before "now" is counted late instead of charged.
    Crossings are checked after every charged line against `effective_limits` (default: the
    spec's limits). Raises `OutOfOrderCharge` when positions do not increase, leaving `state`
    untouched.

    `newest_trusted_ms` (epoch ms, e.g. the charge record's broker time plus the clock skew
    allowed) caps how far a line moves "now": a line stamped later is still charged, to the
    period it names (nothing accepted is lost), but "now" goes no further than the cap, so it
    neither prunes the current period nor makes the lines after it late; a crossing such a line
    makes is dated at the cap, or at the start of its period if that is later. "Now" never
    moves back: a state already ahead of the cap keeps its "now". None: no cap.
    """
    if state.budget_id != budget.budget_id:
        raise BudgetIdMismatch(state.budget_id, budget.budget_id)
    period = budget.spec.period
    rolling_days = period.window_days if period.kind == "rolling" else None
    limits = budget.limits if effective_limits is None else effective_limits
    thresholds = budget.thresholds
    late_ms = max(0, late_window // _ONE_MS)
    cap = _NO_CAP if newest_trusted_ms is None else newest_trusted_ms
    periods = state.periods
    crossed = state.crossed
    watermark: Position | None = state.watermarks.get(source_partition)
    high = state.event_time_high_ms
    late_events = state.late_events
    late_tokens = state.late_tokens

    work: dict[str, list[int]] = {}  # key -> [input, output, events], this call's totals
    levels: dict[str, tuple[int, int, int] | None] = {}
    sums: dict[str, tuple[int, list[int]]] = {}  # rolling: key -> (ordinal, window [in, out])
    new_crossed: dict[str, list[int]] = {}
    late: list[ChargeLine] = []
    crossings: list[Crossing] = []
    applied = skipped = 0
    last: Position | None = None
    w_start = w_end = 0
    key = acc_key = ""
    line_ordinal = 0
    acc: list[int] = []
    level: tuple[int, int, int] | None = None
    window_sum: list[int] = []

    for line in lines:
        pos = line.position
        if last is not None and pos <= last:
            raise OutOfOrderCharge(budget.budget_id, source_partition, pos, last)
        last = pos
        if watermark is not None and pos <= watermark:
            skipped += 1
            continue
        watermark = pos
        at = line.occurred_at_ms
        if at > high:
            high = at if at <= cap else max(high, cap)
        if not w_start <= at < w_end:
            window = period_of_ms(period, at)
            w_start, w_end, key = window.start_ms, window.end_ms, window.key
        if w_end + late_ms < high:
            late.append(line)
            late_events += 1
            late_tokens += line.input + line.output
            continue
        if key != acc_key:
            acc_key = key
            found = work.get(key)
            if found is None:
                stored = periods.get(key)
                found = (
                    [0, 0, 0] if stored is None else [stored.input, stored.output, stored.events]
                )
                work[key] = found
                levels[key] = _levels(thresholds, crossed.get(key, ()), limits)
                if rolling_days is not None:
                    ordinal = parse_key(key)[1].toordinal()
                    sums[key] = (ordinal, _rolling_sum(ordinal, rolling_days, work, periods))
            acc = found
            level = levels[key]
            if rolling_days is not None:
                line_ordinal, window_sum = sums[key]
        acc[0] += line.input
        acc[1] += line.output
        acc[2] += 1
        applied += 1
        if rolling_days is None:
            used_in, used_out = acc[0], acc[1]
        else:
            for ordinal, other in sums.values():
                if ordinal - rolling_days < line_ordinal <= ordinal:
                    other[0] += line.input
                    other[1] += line.output
            used_in, used_out = window_sum[0], window_sum[1]
        if level is not None and (
            used_in >= level[0] or used_out >= level[1] or used_in + used_out >= level[2]
        ):
            totals = PeriodTotals(used_in, used_out, used_in + used_out, 0)
            percent, metric = usage_percent(totals, limits)
            fired = new_crossed.get(key)
            if fired is None:
                fired = new_crossed[key] = list(crossed.get(key, ()))
            for threshold in new_crossings(thresholds, percent, fired):
                fired.append(threshold)
                consumed = consumed_of(totals, metric)
                # Dated no later than the cap (a policy decided from it would otherwise be
                # stamped ahead, and none dated before it could replace it), and not before
                # its period began (a line stamped into the next period crosses there).
                when = max(at if at <= cap else cap, w_start)
                crossings.append(Crossing(key, threshold, metric, consumed, limits[metric], when))
            fired.sort()
            level = levels[key] = _levels(thresholds, fired, limits)

    if last is None:
        return ChargeResult(state, 0, 0)
    out_periods = dict(periods)
    for k, a in work.items():
        out_periods[k] = PeriodTotals(a[0], a[1], a[0] + a[1], a[2])
    out_crossed = {**crossed, **new_crossed}
    if high > state.event_time_high_ms:
        _prune(budget, out_periods, out_crossed, high, late_ms)
    watermarks = dict(state.watermarks)
    if watermark is not None:
        watermarks[source_partition] = watermark
    new_state = LedgerState(
        budget_id=state.budget_id,
        periods=out_periods,
        watermarks=watermarks,
        crossed=out_crossed,
        event_time_high_ms=high,
        late_events=late_events,
        late_tokens=late_tokens,
    )
    return ChargeResult(new_state, applied, skipped, late, crossings)


def _prune(
    budget: Budget,
    periods: dict[str, PeriodTotals],
    crossed: dict[str, list[int]],
    high: int,
    late_ms: int,
) -> None:
    """Drop periods no line can reach any more: past the late window, and for a rolling budget
    outside every window that a still-acceptable bucket sums over."""
    period = budget.spec.period
    extra_days = (period.window_days or 1) - 1 if period.kind == "rolling" else 0
    for key in list(periods):
        unit, start = parse_key(key)
        if unit == "day" and extra_days:
            end_ms = window_of_key(period, day_key(start.toordinal() + extra_days)).end_ms
        else:
            end_ms = window_of_key(period, key).end_ms
        if end_ms + late_ms < high:
            del periods[key]
            crossed.pop(key, None)


def totals_at(state: LedgerState, budget: Budget, at: datetime) -> PeriodTotals:
    """The consumption that counts at instant `at` (aware datetime): the calendar period's
    totals, or for a rolling budget the sum of its window's day buckets."""
    period = budget.spec.period
    key = period_of(period, at).key
    if period.kind != "rolling" or period.window_days is None:
        return state.periods.get(key) or PeriodTotals(0, 0, 0, 0)
    last_ordinal = parse_key(key)[1].toordinal()
    inp = out = events = 0
    for ordinal in range(last_ordinal - period.window_days + 1, last_ordinal + 1):
        found = state.periods.get(day_key(ordinal))
        if found is not None:
            inp += found.input
            out += found.output
            events += found.events
    return PeriodTotals(inp, out, inp + out, events)
