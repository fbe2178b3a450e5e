"""The trend and the recommended action that threshold payloads carry."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from schemas.signals import Band, Projection
from streams.forecast.advice import (
    advise,
    human_tokens,
    projects_overrun,
    recommended_action,
    trend_vs_prev_7d,
)
from streams.forecast.daily import DailySeries


def _projection(p50: float, low80: float, high80: float) -> Projection:
    return Projection(
        metric="total",
        p50=p50,
        band80=Band(low=low80, high=high80),
        band95=Band(low=low80 * 0.9, high=high80 * 1.1),
        method="ets_fast",
        as_of=datetime(2026, 11, 17, tzinfo=UTC),
    )


def test_trend_compares_the_last_week_with_the_week_before() -> None:
    series = DailySeries(date(2026, 11, 1), (100.0,) * 7 + (112.0,) * 7)
    assert trend_vs_prev_7d(series) == pytest.approx(0.12)
    assert trend_vs_prev_7d(series.tail(13)) is None
    assert trend_vs_prev_7d(DailySeries(date(2026, 11, 1), (0.0,) * 7 + (5.0,) * 7)) is None


def test_overrun_action_names_the_share_over_and_the_tokens_to_approve() -> None:
    projection = _projection(451e6, 430e6, 475e6)
    assert recommended_action(projection, 420_000_000) == (
        "projected 7% over: tighten the prompt or approve +31M"
    )
    assert projects_overrun(projection, 420_000_000)


def test_band_risk_and_on_track_actions() -> None:
    risky = recommended_action(_projection(400e6, 380e6, 430e6), 420_000_000)
    assert risky.startswith("projected 95% of the limit, but the 80% band reaches 103%")
    assert recommended_action(_projection(300e6, 280e6, 320e6), 420_000_000) == (
        "on track: projected 71% of the limit"
    )
    assert not projects_overrun(_projection(420e6, 400e6, 440e6), 420_000_000)


def test_advise_bundles_trend_and_action() -> None:
    series = DailySeries(date(2026, 11, 1), (10.0,) * 14)
    advice = advise(series, _projection(300e6, 280e6, 320e6), 420_000_000)
    assert advice.trend_vs_prev_7d == pytest.approx(0.0)
    assert advice.recommended_action.startswith("on track")


@pytest.mark.parametrize(
    ("tokens", "text"),
    [(29_100_000, "30M"), (1_234, "1.3K"), (999, "999"), (1e9, "1B"), (9_960_000, "10M")],
)
def test_human_tokens_round_up(tokens: float, text: str) -> None:
    assert human_tokens(tokens) == text
