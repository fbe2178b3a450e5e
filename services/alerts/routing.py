"""Which signal goes to which channel, and when: pure rules, time is an argument.

A signal is one alertable fact about a budget (a threshold crossed, a projected overrun, a
policy change, a period reset), reduced to what routing and deduplication need. Its `dedupe`
tuple (budget, period, kind, discriminator) plus the channel name is the outbox's unique key,
so a replayed event can never be enqueued twice.

Noise rules, evaluated on the event's own time so that a replay decides as the first run did:
- quiet hours delay a non-urgent alert to the end of the window (nothing is dropped);
- a minimum interval per (budget, channel) suppresses a non-urgent alert that follows the
  previous one too closely (kept in the outbox as `suppressed`, resendable by hand);
- an event already older than `stale_after_seconds` when first read (an outbox rebuilt from
  the topics, a consumer that was down for days) is suppressed: an alert that fires after the
  budget is gone helps nobody. This one rule compares with the reading time.
Urgent means 100 percent or more, or a hard stop. PagerDuty takes only pages (urgent) and
period resets (resolves), and neither waits for quiet hours nor for the interval: the on-call
schedule and the `dedup_key` are PagerDuty's own noise control.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.base import Event
from schemas.signals import PolicyChanged, ProjectedOverrun, ThresholdCrossed
from services.alerts.config import AlertKind, AlertsConfig, QuietHours, Rule


@dataclass(frozen=True)
class AlertSignal:
    """The routing view of one event. `at` is the event's time, never the clock."""

    kind: AlertKind
    tenant: str
    budget_id: str
    period_key: str
    discriminator: str
    at: datetime
    threshold: int | None = None
    policy: str | None = None

    @property
    def urgent(self) -> bool:
        return (self.threshold is not None and self.threshold >= 100) or self.policy == "hard_stop"

    @property
    def pages(self) -> bool:
        """Whether PagerDuty is triggered: 100 percent or more, or a hard stop."""
        return self.urgent and self.kind in ("threshold", "policy_changed")


@dataclass(frozen=True)
class Route:
    """One delivery to enqueue: to `channel`, not before `not_before`, or suppressed."""

    channel: str
    channel_type: str
    not_before: datetime
    suppressed: bool = False
    reason: str = ""


@dataclass(frozen=True)
class PriorPolicy:
    """The policy last seen for a budget, and the period it was decided in."""

    policy: str = "allow"
    period_key: str | None = None


def is_period_reset(event: PolicyChanged, prior: PriorPolicy | None = None) -> bool:
    """A return to `allow` because a new period began.

    Recognised by a reason that names the reset, or by a restrictive policy of an earlier
    period giving way to `allow` in another period (the reset timer's own event).
    """
    if event.policy != "allow":
        return False
    if "reset" in event.reason.lower():
        return True
    return (
        prior is not None
        and prior.policy != "allow"
        and prior.period_key is not None
        and prior.period_key != event.period_key
    )


def signal_of(event: Event, prior: PriorPolicy | None = None) -> AlertSignal | None:
    """The alertable view of a signal event, or None for events that alert nobody.

    `prior` is the budget's policy before `event`, to recognise a period reset.
    """
    if isinstance(event, ThresholdCrossed):
        return AlertSignal(
            kind="threshold",
            tenant=event.tenant,
            budget_id=event.budget_id,
            period_key=event.period_key,
            discriminator=f"{event.threshold}:{event.metric}",
            at=event.crossed_at,
            threshold=event.threshold,
        )
    if isinstance(event, ProjectedOverrun):
        return AlertSignal(
            kind="projected_overrun",
            tenant=event.tenant,
            budget_id=event.budget_id,
            period_key=event.period_key,
            discriminator=event.projection.metric,
            at=event.detected_at,
        )
    if isinstance(event, PolicyChanged):
        reset = is_period_reset(event, prior)
        return AlertSignal(
            kind="period_reset" if reset else "policy_changed",
            tenant=event.tenant,
            budget_id=event.budget_id,
            period_key=event.period_key,
            discriminator="reset" if reset else event.policy,
            at=event.effective_at,
            policy=event.policy,
        )
    return None


def rule_matches(rule: Rule, signal: AlertSignal, path: Sequence[str]) -> bool:
    """`path` is the budget's ids from its root to itself; a subtree rule needs its root in it."""
    if rule.tenant not in ("*", signal.tenant):
        return False
    if rule.subtree is not None and rule.subtree not in path:
        return False
    if signal.kind not in rule.events:
        return False
    return not (
        signal.kind == "threshold" and rule.thresholds and signal.threshold not in rule.thresholds
    )


def quiet_until(quiet: QuietHours, at: datetime) -> datetime | None:
    """The end of the quiet window `at` falls in (as UTC-aware), or None outside it."""
    zone = ZoneInfo(quiet.timezone)
    local = at.astimezone(zone)
    now_t = local.time()
    if quiet.start == quiet.end:
        return None
    if quiet.start < quiet.end:
        inside = quiet.start <= now_t < quiet.end
        end_day = local.date()
    else:  # the window spans midnight
        inside = now_t >= quiet.start or now_t < quiet.end
        end_day = local.date() + timedelta(days=1) if now_t >= quiet.start else local.date()
    if not inside:
        return None
    end_local = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end_local.astimezone(at.tzinfo)


def route(
    signal: AlertSignal,
    path: Sequence[str],
    config: AlertsConfig,
    last_sent: Mapping[str, datetime],
    read_at: datetime | None = None,
) -> list[Route]:
    """The deliveries for `signal`, one per channel, in the order of the first rule naming it.

    `last_sent` maps a channel name to the event time of the previous unsuppressed alert of
    this budget on that channel. `read_at` is when the service first read the event: an event
    older than `config.stale_after_seconds` then is kept, suppressed, and not sent.
    """
    decided: dict[str, Route] = {}
    stale = (
        read_at is not None
        and config.stale_after_seconds > 0
        and read_at - signal.at > timedelta(seconds=config.stale_after_seconds)
    )
    for rule in config.rules:
        if not rule_matches(rule, signal, path):
            continue
        for name in rule.channels:
            if name in decided:
                continue
            channel_type = config.channel(name).type
            if channel_type == "pagerduty":
                if signal.pages or signal.kind == "period_reset":
                    decided[name] = Route(name, channel_type, signal.at)
                continue
            decided[name] = _noise_rules(name, channel_type, rule, signal, last_sent.get(name))
    if stale:
        reason = f"stale: older than stale_after_seconds={config.stale_after_seconds} when read"
        return [
            Route(r.channel, r.channel_type, r.not_before, True, reason) for r in decided.values()
        ]
    return list(decided.values())


def _noise_rules(
    name: str, channel_type: str, rule: Rule, signal: AlertSignal, last: datetime | None
) -> Route:
    if signal.urgent:
        return Route(name, channel_type, signal.at)
    interval = timedelta(seconds=rule.min_interval_seconds)
    if last is not None and interval and timedelta(0) <= signal.at - last < interval:
        reason = f"within min_interval_seconds={rule.min_interval_seconds} of the previous alert"
        return Route(name, channel_type, signal.at, suppressed=True, reason=reason)
    if rule.quiet_hours is not None:
        until = quiet_until(rule.quiet_hours, signal.at)
        if until is not None:
            return Route(name, channel_type, until, reason="held for quiet hours")
    return Route(name, channel_type, signal.at)
