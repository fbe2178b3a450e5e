"""The proxy's settings: read from the environment, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.proxy.errors import ProxyConfigError
from services.proxy.settings import ProxySettings


def test_environment_configures_upstreams_keys_and_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOTMENT_PROXY_PORT", "9001")
    monkeypatch.setenv("ALLOTMENT_PROXY_OPENAI_UPSTREAM", "http://127.0.0.1:1/")
    monkeypatch.setenv("ALLOTMENT_PROXY_ANTHROPIC_API_KEY", "sk-ant")
    monkeypatch.setenv("ALLOTMENT_PROXY_FAIL_OPEN", "false")
    monkeypatch.setenv("ALLOTMENT_PROXY_SPOOL_DIR", "/tmp/spool-x")
    monkeypatch.setenv("ALLOTMENT_PROXY_MAX_BODY_BYTES", "1000")
    settings = ProxySettings.from_env(host="0.0.0.0")
    assert (settings.host, settings.port, settings.fail_open) == ("0.0.0.0", 9001, False)
    assert settings.upstream("openai") == "http://127.0.0.1:1"
    assert settings.upstream_keys == {"anthropic": "sk-ant"}
    assert settings.spool_dir == Path("/tmp/spool-x")
    assert settings.max_body_bytes == 1000


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOTMENT_PROXY_PORT", "eighty")
    with pytest.raises(ProxyConfigError) as caught:
        ProxySettings.from_env()
    assert caught.value.setting == "ALLOTMENT_PROXY_PORT"
    with pytest.raises(ProxyConfigError) as server:
        ProxySettings(server="nginx")
    assert server.value.setting == "server"
    with pytest.raises(ProxyConfigError, match="no upstream configured for 'mistral'"):
        ProxySettings().upstream("mistral")
