"""A budget's consumption per local day, folded from charge lines, exact under redelivery.

The ledger keeps one total per period; a forecast needs the days. This fold keeps the last
`KEEP_DAYS` local days of a budget (input and output tokens), in its zone, and skips charge
lines at or below the watermark of their source partition, the same rule the ledger follows,
so a redelivered charge is never counted twice in the history either.
It also remembers the periods whose projected overrun was announced, so that
`ProjectedOverrun` fires once per period, also across restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from schemas.budgets import Metric, Period
from streams.forecast.daily import DailySeries
from streams.forecast.errors import ForecastInputError
from streams.ledger import ChargeLine, Position
from streams.periods import period_of_ms

KEEP_DAYS = 98
"""Fourteen weeks: the models read at most thirteen, plus the current day."""


@dataclass(frozen=True)
class UsageDays:
    """Input and output tokens per local day (ISO date keys) of one budget."""

    budget_id: str
    days: dict[str, tuple[int, int]] = field(default_factory=dict)
    watermarks: dict[int, Position] = field(default_factory=dict)
    announced: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_id": self.budget_id,
            "days": {k: list(v) for k, v in self.days.items()},
            "watermarks": {str(p): list(pos) for p, pos in self.watermarks.items()},
            "announced": list(self.announced),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageDays:
        try:
            return cls(
                str(data["budget_id"]),
                {str(k): (int(v[0]), int(v[1])) for k, v in data.get("days", {}).items()},
                {int(p): (int(v[0]), int(v[1])) for p, v in data.get("watermarks", {}).items()},
                tuple(str(k) for k in data.get("announced", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ForecastInputError("usage_days", f"is not a stored UsageDays: {exc}") from None

    def series(self, metric: Metric, last: date) -> DailySeries:
        """The metric's days through `last`, zero-filled, oldest kept day first."""
        if not self.days:
            return DailySeries(last + timedelta(days=1), ())
        first = min(date.fromisoformat(k) for k in self.days)
        if first > last:
            return DailySeries(last + timedelta(days=1), ())
        count = (last - first).days + 1
        values = []
        for i in range(count):
            row = self.days.get((first + timedelta(days=i)).isoformat(), (0, 0))
            values.append(float(_metric(row, metric)))
        return DailySeries(first, tuple(values))

    def consumed(self, metric: Metric, first: date, last: date) -> int:
        """Tokens of the metric on the local days first..last (a period so far)."""
        lo, hi = first.isoformat(), last.isoformat()
        return sum(_metric(row, metric) for k, row in self.days.items() if lo <= k <= hi)


def _metric(row: tuple[int, int], metric: Metric) -> int:
    if metric == "input":
        return row[0]
    if metric == "output":
        return row[1]
    return row[0] + row[1]


def add_lines(
    state: UsageDays, zone: str, source_partition: int, lines: Sequence[ChargeLine]
) -> UsageDays:
    """Fold charge lines of one source partition (in position order) into the days.

    Every charged event passes here: the local day is looked up once per run of lines that
    fall in it (a charge lists lines in time order, nearly always within one or two days),
    and each run is summed before it is added to its day.
    """
    day_period = _day_period(zone)
    mark = state.watermarks.get(source_partition)
    days = dict(state.days)
    start_ms = end_ms = 0
    key = ""
    run_in = run_out = 0
    for line in lines:
        if mark is not None and line.position <= mark:
            continue
        mark = line.position
        at = line.occurred_at_ms
        if not start_ms <= at < end_ms:
            if key:
                _add(days, key, run_in, run_out)
            window = period_of_ms(day_period, at)
            start_ms, end_ms, key = window.start_ms, window.end_ms, window.key
            run_in = run_out = 0
        run_in += line.input
        run_out += line.output
    if key:
        _add(days, key, run_in, run_out)
    if mark is None or mark == state.watermarks.get(source_partition):
        return state  # nothing past the watermark: the caller stores nothing (`is` tells it)
    if len(days) > KEEP_DAYS:
        newest = max(date.fromisoformat(k) for k in days)
        oldest = (newest - timedelta(days=KEEP_DAYS - 1)).isoformat()
        days = {k: v for k, v in days.items() if k >= oldest}
    watermarks = {**state.watermarks, source_partition: mark}
    return replace(state, days=days, watermarks=watermarks)


def _add(days: dict[str, tuple[int, int]], key: str, tokens_in: int, tokens_out: int) -> None:
    old = days.get(key, (0, 0))
    days[key] = (old[0] + tokens_in, old[1] + tokens_out)


@lru_cache(maxsize=1024)
def _day_period(zone: str) -> Period:
    """The local-day period of a zone (a model, built once per zone rather than per charge)."""
    return Period(kind="day", timezone=zone)


def announce(state: UsageDays, period_key: str) -> UsageDays:
    """Remember that the projected overrun of `period_key` was published."""
    if period_key in state.announced:
        return state
    return replace(state, announced=(*state.announced, period_key)[-12:])
