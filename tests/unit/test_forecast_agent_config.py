"""The forecast agent's configuration and its wrapper around the pipeline's charger."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.faust.forecasting import EnrichingCharger, ForecastConfig
from streams.forecast.errors import ForecastInputError


def test_config_reads_the_environment_and_refuses_bad_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOTMENT_FORECAST_INTERVAL", "600")
    assert ForecastConfig.from_env().interval == 600.0
    assert ForecastConfig().interval == 3600.0  # hourly by default
    monkeypatch.setenv("ALLOTMENT_FORECAST_INTERVAL", "0")
    with pytest.raises(ForecastInputError) as info:
        ForecastConfig.from_env()
    assert info.value.field == "ALLOTMENT_FORECAST_INTERVAL"


@dataclass
class _Stored:
    crossings: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _Outcome:
    stored: _Stored


class _Inner:
    def charge(self, stored: _Stored, budget: Any, charge: Any) -> _Outcome:
        wire = {"period_key": "2026-11", "metric": "total", "limit": 100, "projection": None}
        return _Outcome(_Stored({**stored.crossings, "2026-11|90": wire}))


class _Forecaster:
    policies = None

    def threshold_fields(self, budget_id: str, period_key: str, metric: str, limit: int):
        return {"projection": {"p50": 120.0}, "recommended_action": "projected 20% over"}


@dataclass
class _Budget:
    budget_id: str = "b1"


def test_only_new_crossings_take_the_forecast() -> None:
    old = {"period_key": "2026-11", "metric": "total", "limit": 100, "projection": None}
    charger = EnrichingCharger(_Inner(), _Forecaster())  # type: ignore[arg-type]
    outcome = charger.charge(_Stored({"2026-11|75": old}), _Budget(), None)
    assert outcome.stored.crossings["2026-11|90"]["projection"] == {"p50": 120.0}
    assert outcome.stored.crossings["2026-11|75"]["projection"] is None
