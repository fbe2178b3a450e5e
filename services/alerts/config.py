"""The alerts service's configuration: channels, routing rules, delivery tuning.

Read from one YAML or JSON file (`ALLOTMENT_ALERTS_CONFIG`) when the service starts. Rules are
per tenant and per budget subtree; their evaluation lives in `services.alerts.routing`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import time
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas.base import field_errors
from services.alerts.errors import AlertConfigError

AlertKind = Literal["threshold", "projected_overrun", "policy_changed", "period_reset"]
ALL_KINDS: tuple[AlertKind, ...] = (
    "threshold",
    "projected_overrun",
    "policy_changed",
    "period_reset",
)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackChannel(_Part):
    """A Slack incoming webhook (`https://hooks.slack.com/services/...`)."""

    type: Literal["slack"] = "slack"
    name: str = Field(min_length=1)
    url: str = Field(min_length=1)


class PagerDutyChannel(_Part):
    """An Events API v2 integration: pages on 100% or hard_stop, resolves at the period reset."""

    type: Literal["pagerduty"] = "pagerduty"
    name: str = Field(min_length=1)
    routing_key: str = Field(min_length=1)
    url: str = "https://events.pagerduty.com/v2/enqueue"


class WebhookChannel(_Part):
    """A generic HTTPS endpoint, signed per Standard Webhooks with a `whsec_` base64 secret."""

    type: Literal["webhook"] = "webhook"
    name: str = Field(min_length=1)
    url: str = Field(min_length=1)
    secret: str

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: str) -> str:
        raw = value.removeprefix("whsec_")
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be 'whsec_' followed by base64") from None
        if len(key) < 16:
            raise ValueError("must decode to at least 16 bytes")
        return value


class EmailChannel(_Part):
    """An SMTP relay and the recipients of one mailing."""

    type: Literal["email"] = "email"
    name: str = Field(min_length=1)
    host: str
    port: int = Field(default=25, gt=0, lt=65536)
    sender: str = Field(min_length=3)
    recipients: list[str] = Field(min_length=1)
    starttls: bool = False
    username: str | None = None
    password: str | None = None


Channel = Annotated[
    SlackChannel | PagerDutyChannel | WebhookChannel | EmailChannel, Field(discriminator="type")
]


class QuietHours(_Part):
    """A daily window, in `timezone`, when non-urgent alerts wait until it ends."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"must be an IANA time zone name, got {value!r}") from None
        return value


class Rule(_Part):
    """Which events of a tenant (or of one budget and its descendants) go to which channels.

    `tenant` "*" matches every tenant. `thresholds` narrows threshold events (empty = all).
    Rules are read in order; for one channel the first matching rule decides quiet hours and
    the minimum interval.
    """

    tenant: str = Field(min_length=1)
    subtree: str | None = None
    events: list[AlertKind] = Field(default_factory=lambda: list(ALL_KINDS), min_length=1)
    thresholds: list[int] = Field(default_factory=list)
    channels: list[str] = Field(min_length=1)
    quiet_hours: QuietHours | None = None
    min_interval_seconds: int = Field(default=0, ge=0)


class DeliveryTuning(_Part):
    """Retry schedule and leases of the delivery loop."""

    max_attempts: int = Field(default=10, ge=1)
    base_delay_seconds: float = Field(default=2.0, gt=0)
    max_delay_seconds: float = Field(default=600.0, gt=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)
    poll_seconds: float = Field(default=0.5, gt=0)
    batch_size: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _lease_outlives_a_request(self) -> DeliveryTuning:
        if self.lease_seconds <= self.request_timeout_seconds:
            raise ValueError(
                "delivery.lease_seconds: must exceed request_timeout_seconds, or a slow request "
                "still in flight is taken over by another worker and sent twice"
            )
        return self


class AlertsConfig(_Part):
    """The whole file. `stale_after_seconds` (0 = never) holds back alerts whose event is
    older than that when first read, e.g. when the outbox is rebuilt from the topics."""

    api_base: str = "http://127.0.0.1:8000"
    channels: list[Channel] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    delivery: DeliveryTuning = Field(default_factory=DeliveryTuning)
    stale_after_seconds: int = Field(default=7 * 86400, ge=0)

    def channel(self, name: str) -> SlackChannel | PagerDutyChannel | WebhookChannel | EmailChannel:
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise AlertConfigError("channels", f"no channel named {name!r}")


def parse_config(data: object) -> AlertsConfig:
    """Validate a config mapping; names every broken field, checks rule→channel references."""
    try:
        config = AlertsConfig.model_validate(data)
    except ValidationError as exc:
        first = field_errors(exc)[0]
        raise AlertConfigError(first.field, first.rule) from None
    names = [c.name for c in config.channels]
    if len(set(names)) != len(names):
        raise AlertConfigError("channels", "channel names must be unique")
    for i, rule in enumerate(config.rules):
        for name in rule.channels:
            if name not in names:
                raise AlertConfigError(f"rules.{i}.channels", f"no channel named {name!r}")
    return config


def load_config(path: str | Path) -> AlertsConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AlertConfigError("ALLOTMENT_ALERTS_CONFIG", f"cannot read {path}: {exc}") from None
    return parse_config(yaml.safe_load(text) or {})
