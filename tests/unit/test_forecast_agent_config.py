"""The forecast agent's configuration (its hooks into the charger: test_faust_charging.py)."""

from __future__ import annotations

import pytest

from streams.faust.forecasting import ForecastConfig
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
