"""What a person should read next to a projection: the trend and a recommended action.

Threshold payloads and `ProjectedOverrun` carry these, so an alert says "projected 7% over:
tighten the prompt or approve +30M" instead of only "you are at 59%".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.signals import Projection
from streams.forecast.daily import DailySeries

_UNITS = ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K"))


@dataclass(frozen=True)
class Advice:
    """`trend_vs_prev_7d`: +0.12 means the last 7 days used 12% more than the 7 before."""

    trend_vs_prev_7d: float | None
    recommended_action: str


def trend_vs_prev_7d(history: DailySeries) -> float | None:
    """Last 7 complete days against the 7 before; None without 14 days or with a zero week."""
    if len(history) < 14:
        return None
    values = history.array()
    previous = float(values[-14:-7].sum())
    if previous <= 0:
        return None
    return float(values[-7:].sum()) / previous - 1.0


def human_tokens(tokens: float) -> str:
    """Round up to two significant digits with a unit: 29_100_000 -> '30M', 1_234 -> '1.3K'."""
    tokens = max(0.0, tokens)
    if tokens < 1000:
        return str(math.ceil(tokens))
    for size, unit in _UNITS:
        if tokens >= size:
            scaled = tokens / size
            step = 10 ** (math.floor(math.log10(scaled)) - 1)
            rounded = math.ceil(round(scaled / step, 9)) * step
            text = f"{rounded:.1f}".rstrip("0").rstrip(".") if rounded < 10 else f"{rounded:.0f}"
            return f"{text}{unit}"
    return str(math.ceil(tokens))


def recommended_action(projection: Projection, limit: int) -> str:
    """The sentence an alert carries: over at p50, at risk within the 80% band, or on track."""
    if limit <= 0:
        return ""
    share = projection.p50 / limit
    if share > 1.0:
        over = max(1, round((share - 1.0) * 100))
        gap = human_tokens(projection.p50 - limit)
        return f"projected {over}% over: tighten the prompt or approve +{gap}"
    if projection.band80.high > limit:
        reach = math.ceil(projection.band80.high / limit * 100)
        return (
            f"projected {math.floor(share * 100)}% of the limit, but the 80% band reaches "
            f"{reach}%: watch it, or approve +{human_tokens(projection.band80.high - limit)}"
        )
    return f"on track: projected {math.floor(share * 100)}% of the limit"


def advise(history: DailySeries, projection: Projection, limit: int) -> Advice:
    return Advice(trend_vs_prev_7d(history), recommended_action(projection, limit))


def projects_overrun(projection: Projection, limit: int) -> bool:
    """The `ProjectedOverrun` rule: the p50 projection exceeds the limit (once per period is
    the caller's bookkeeping: it remembers the periods it already announced)."""
    return limit > 0 and projection.p50 > limit
