"""Routing rules: tenant and subtree matching, quiet hours, minimum interval, PagerDuty scope."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from fakes import alert_events as ev

from services.alerts.config import AlertsConfig, QuietHours, parse_config
from services.alerts.errors import AlertConfigError
from services.alerts.routing import (
    AlertSignal,
    PriorPolicy,
    is_period_reset,
    quiet_until,
    route,
    signal_of,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def config(**rule: object) -> AlertsConfig:
    return parse_config(
        {
            "channels": [
                {"type": "slack", "name": "slack", "url": "http://x/slack"},
                {"type": "pagerduty", "name": "pd", "routing_key": "k", "url": "http://x/pd"},
                {"type": "webhook", "name": "hook", "url": "http://x/h", "secret": SECRET},
            ],
            "rules": [{"tenant": "acme", "channels": ["slack", "pd", "hook"], **rule}],
        }
    )


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 17, hour, minute, tzinfo=UTC)


def sig(threshold: int = 90, when: datetime | None = None, tenant: str = "acme") -> AlertSignal:
    event = ev.crossed(tenant, "team-a", threshold, crossed_at=when or at(12))
    result = signal_of(event)
    assert result is not None
    return result


def test_threshold_goes_to_slack_and_webhook_but_pages_only_at_100() -> None:
    routes = route(sig(90), ["org", "team-a"], config(), {})
    assert [r.channel for r in routes] == ["slack", "hook"]
    routes = route(sig(100), ["org", "team-a"], config(), {})
    assert [r.channel for r in routes] == ["slack", "pd", "hook"]


def test_other_tenant_and_other_subtree_get_nothing() -> None:
    assert route(sig(tenant="globex"), ["org", "team-a"], config(), {}) == []
    cfg = config(subtree="org-eu")
    assert route(sig(), ["org", "team-a"], cfg, {}) == []
    assert len(route(sig(), ["org-eu", "team-a"], cfg, {})) == 2


def test_thresholds_filter_narrows_threshold_events() -> None:
    cfg = config(thresholds=[100])
    assert route(sig(90), ["team-a"], cfg, {}) == []
    assert route(sig(100), ["team-a"], cfg, {}) != []


def test_quiet_hours_hold_non_urgent_alerts_until_the_window_ends() -> None:
    quiet = {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
    cfg = config(quiet_hours=quiet)
    # 23:30 UTC is 00:30 in Berlin: inside; the window ends at 07:00 Berlin = 06:00 UTC.
    routes = route(sig(90, at(23, 30)), ["team-a"], cfg, {})
    assert {r.not_before for r in routes} == {datetime(2026, 11, 18, 6, 0, tzinfo=UTC)}
    urgent = route(sig(100, at(23, 30)), ["team-a"], cfg, {})
    assert {r.not_before for r in urgent} == {at(23, 30)}


def test_quiet_until_same_day_window_and_outside() -> None:
    quiet = QuietHours(start=time(12), end=time(14), timezone="UTC")
    assert quiet_until(quiet, at(13)) == at(14)
    assert quiet_until(quiet, at(14)) is None
    assert quiet_until(quiet, at(11, 59)) is None


def test_min_interval_suppresses_a_close_follow_up_but_never_an_urgent_one() -> None:
    cfg = config(min_interval_seconds=3600)
    last = {"slack": at(12) - timedelta(minutes=10), "hook": at(12) - timedelta(hours=2)}
    routes = {r.channel: r for r in route(sig(90), ["team-a"], cfg, last)}
    assert routes["slack"].suppressed and "min_interval" in routes["slack"].reason
    assert not routes["hook"].suppressed
    urgent = route(sig(100), ["team-a"], cfg, last)
    assert not any(r.suppressed for r in urgent)


def test_period_reset_reaches_pagerduty_other_policies_only_when_hard_stop() -> None:
    reset = signal_of(ev.reset("acme", "team-a"))
    assert reset is not None and reset.kind == "period_reset"
    assert "pd" in [r.channel for r in route(reset, ["team-a"], config(), {})]
    degrade = signal_of(ev.policy("acme", "team-a", "degrade_route"))
    assert degrade is not None and degrade.kind == "policy_changed"
    assert "pd" not in [r.channel for r in route(degrade, ["team-a"], config(), {})]
    stop = signal_of(ev.policy("acme", "team-a", "hard_stop"))
    assert stop is not None and "pd" in [r.channel for r in route(stop, ["team-a"], config(), {})]


def test_dedupe_discriminator_separates_metric_and_threshold() -> None:
    a = signal_of(ev.crossed("acme", "b", 90))
    b = signal_of(ev.crossed("acme", "b", 90, metric="input"))
    c = signal_of(ev.crossed("acme", "b", 100))
    assert a is not None and b is not None and c is not None
    assert len({a.discriminator, b.discriminator, c.discriminator}) == 3


def test_config_names_the_broken_field() -> None:
    with pytest.raises(AlertConfigError, match=r"rules\.0\.channels"):
        parse_config({"channels": [], "rules": [{"tenant": "a", "channels": ["nope"]}]})
    with pytest.raises(AlertConfigError, match="secret"):
        parse_config(
            {"channels": [{"type": "webhook", "name": "h", "url": "u", "secret": "plain"}]}
        )


def test_reset_recognised_by_reason_or_by_a_new_period_after_a_restrictive_policy() -> None:
    plain = ev.policy("acme", "team-a", "allow", period_key="2026-11", reason="0% of the limit")
    assert not is_period_reset(plain)
    assert not is_period_reset(plain, PriorPolicy("allow", "2026-10"))
    assert not is_period_reset(plain, PriorPolicy("hard_stop", "2026-11"))  # limit raised
    assert is_period_reset(plain, PriorPolicy("hard_stop", "2026-10"))
    assert is_period_reset(ev.reset("acme", "team-a"))
    signal = signal_of(plain, PriorPolicy("degrade_route", "2026-10"))
    assert signal is not None and signal.kind == "period_reset"


def test_lease_must_outlive_a_request() -> None:
    with pytest.raises(AlertConfigError, match="lease_seconds"):
        parse_config({"delivery": {"lease_seconds": 5, "request_timeout_seconds": 10}})


def test_an_event_already_stale_when_read_is_kept_but_not_sent() -> None:
    cfg = config()
    fresh = route(sig(100), ["team-a"], cfg, {}, read_at=at(12) + timedelta(days=6))
    assert not any(r.suppressed for r in fresh)
    stale = route(sig(100), ["team-a"], cfg, {}, read_at=at(12) + timedelta(days=8))
    assert len(stale) == 3 and all(r.suppressed and "stale" in r.reason for r in stale)
    never = cfg.model_copy(update={"stale_after_seconds": 0})
    late = route(sig(100), ["team-a"], never, {}, read_at=at(12) + timedelta(days=80))
    assert late and not any(r.suppressed for r in late)
