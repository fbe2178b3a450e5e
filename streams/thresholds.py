"""Threshold crossings: each (budget, period, threshold) fires once.

The ledger remembers what fired in `LedgerState.crossed` and asks `new_crossings` after every
charged line, so a crossing carries the event time of the very line that crossed, and a replay
of the same lines fires exactly the same crossings.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.budgets import Metric
from streams.errors import InvalidState

_METRIC_ORDER: tuple[Metric, ...] = ("input", "output", "total")


class Totals(Protocol):
    """Token counts of one period (`ledger.PeriodTotals` is one)."""

    @property
    def input(self) -> int: ...
    @property
    def output(self) -> int: ...
    @property
    def total(self) -> int: ...


def consumed_of(totals: Totals, metric: Metric) -> int:
    """The count a limit on `metric` is checked against."""
    if metric == "input":
        return totals.input
    if metric == "output":
        return totals.output
    return totals.total


def percent_of(consumed: int, limit: int) -> float:
    """Consumption as a percentage of a limit; a limit of 0 reads as 100 percent while
    nothing is consumed and as infinity once anything is."""
    if limit > 0:
        return consumed * 100 / limit
    return float("inf") if consumed > 0 else 100.0


def usage_percent(totals: Totals, limits: Mapping[Metric, int]) -> tuple[float, Metric]:
    """The highest percentage of any limited metric, and that metric.

    Ties go to the first of input, output, total. A limit of 0 (nothing allocated) reads as
    100 percent while nothing is consumed and as infinity once anything is. With no limits at
    all the answer is (0.0, "total").
    """
    best: tuple[float, Metric] = (0.0, "total")
    first = True
    for metric in _METRIC_ORDER:
        limit = limits.get(metric)
        if limit is None:
            continue
        percent = percent_of(consumed_of(totals, metric), limit)
        if first or percent > best[0]:
            best = (percent, metric)
            first = False
    return best


def new_crossings(thresholds: Iterable[int], percent: float, already: Collection[int]) -> list[int]:
    """Thresholds at or below `percent` that have not fired yet, in increasing order."""
    return sorted(t for t in thresholds if t <= percent and t not in already)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget reached `threshold` percent in `period_key`.

    `metric` is the limited metric with the highest percentage at that line, `consumed` its
    consumption and `limit` its effective limit (the spec's, unless the caller passed
    effective limits). For a rolling budget `period_key` is the day bucket of the crossing
    line and `consumed` is the rolling-window sum ending with that bucket.
    """

    period_key: str
    threshold: int
    metric: Metric
    consumed: int
    limit: int
    crossed_at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "period_key": self.period_key,
            "threshold": self.threshold,
            "metric": self.metric,
            "consumed": self.consumed,
            "limit": self.limit,
            "crossed_at_ms": self.crossed_at_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Crossing:
        metric = data.get("metric")
        if metric not in _METRIC_ORDER:
            raise InvalidState("Crossing", "metric", f"must be one of {_METRIC_ORDER}")
        try:
            return cls(
                period_key=str(data["period_key"]),
                threshold=int(data["threshold"]),
                metric=metric,
                consumed=int(data["consumed"]),
                limit=int(data["limit"]),
                crossed_at_ms=int(data["crossed_at_ms"]),
            )
        except KeyError as exc:
            raise InvalidState("Crossing", str(exc.args[0]), "is required") from None
