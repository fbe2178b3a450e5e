"""Integer settings: unset or empty gives the default; a bad value names the variable."""

from __future__ import annotations

import pytest

from services.alerts.errors import AlertConfigError
from services.common.settings import env_int
from services.proxy.errors import ProxyConfigError


def test_unset_or_empty_gives_the_default_and_a_number_is_read() -> None:
    env = {"EMPTY": "", "PORT": "9090"}
    assert env_int(env, "MISSING", 7, ProxyConfigError) == 7
    assert env_int(env, "EMPTY", 7, ProxyConfigError) == 7
    assert env_int(env, "PORT", 7, ProxyConfigError) == 9090


def test_a_bad_value_raises_the_services_own_error_naming_the_variable() -> None:
    with pytest.raises(ProxyConfigError) as proxy:
        env_int({"PORT": "eighty"}, "PORT", 80, ProxyConfigError)
    assert proxy.value.setting == "PORT"
    assert "eighty" in proxy.value.rule
    with pytest.raises(AlertConfigError) as alerts:
        env_int({"N": "1.5"}, "N", 1, AlertConfigError)
    assert alerts.value.field == "N"
