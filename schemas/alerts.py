"""Alert delivery facts: what happened to each alert the alerts service tried to send.

The PostgreSQL outbox is only a work queue and read model; these events are the record a
finance or audit reader relies on ("was the on-call paged when the support copilot hit its
hard stop, and when?"). One event per final outcome of a delivery: `AlertDelivered` when a
receiver took it, `AlertAbandoned` when the service gave up (rejected, attempts used up, or a
channel that no longer exists).

`alert_id` is the outbox's stable idempotency key (the same on every attempt, and the id the
receivers see), so a repeat after a crash carries the same id and readers dedupe by it. Of
several outcomes for one alert (a repeat, or a manual resend), the one with the latest
`last_attempt_at` is current (`services.alerts.outcomes.fold` applies that rule).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import BudgetId, Event, Name, TenantId, UtcDatetime

AlertKind = Literal["threshold", "projected_overrun", "policy_changed", "period_reset"]
"""What an alert is about; one per signal the routing recognises."""
ChannelType = Literal["slack", "pagerduty", "webhook", "email"]
AlertAction = Literal["notify", "trigger", "resolve"]
"""`trigger`/`resolve` open and close a PagerDuty incident; every other delivery notifies."""
AbandonReason = Literal["rejected", "attempts_exhausted", "misconfigured"]
"""`rejected`: the receiver refused it for good (a 4xx, an SMTP 5xx). `attempts_exhausted`:
every allowed attempt failed with a retryable error. `misconfigured`: its channel is gone."""

MAX_DETAIL = 1000
"""Upper bound (characters) of a receiver's reply or an error text carried on the wire."""
AlertId = Annotated[
    str,
    Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
]
Detail = Annotated[str, Field(max_length=MAX_DETAIL)]


class SourceEvent(BaseModel):
    """The signal an alert was raised for, and where it sits in the log.

    `topic`, `partition` and `offset` locate the record (unset for an alert enqueued before they
    were stored); `occurred_at` is the signal's own event time.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Name
    occurred_at: UtcDatetime
    topic: Name | None = None
    partition: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)


class _AlertOutcome(Event):
    """What both outcomes carry: which alert, for which budget and signal, over which route."""

    alert_id: AlertId
    tenant: TenantId
    budget_id: BudgetId
    period_key: Name
    kind: AlertKind
    discriminator: str = Field(max_length=200)
    action: AlertAction
    channel: Name
    channel_type: ChannelType
    source: SourceEvent
    attempts: int = Field(ge=1)
    first_attempt_at: UtcDatetime
    last_attempt_at: UtcDatetime

    @model_validator(mode="after")
    def _attempts_in_order(self) -> _AlertOutcome:
        if self.last_attempt_at < self.first_attempt_at:
            raise ValueError("last_attempt_at: must not be before first_attempt_at")
        return self


class AlertDelivered(_AlertOutcome):
    """A receiver accepted the alert. `receiver_status` is its reply (e.g. "HTTP 202: ...")."""

    TYPE: ClassVar[str] = "AlertDelivered"
    VERSION: ClassVar[int] = 1
    type: Literal["AlertDelivered"] = "AlertDelivered"
    version: Literal[1] = 1

    delivered_at: UtcDatetime
    receiver_status: Detail = ""


class AlertAbandoned(_AlertOutcome):
    """The service gave up on the alert; `error` is the last failure. Only a person resends it
    (`allotment alerts resend`), which later yields a new outcome under the same `alert_id`."""

    TYPE: ClassVar[str] = "AlertAbandoned"
    VERSION: ClassVar[int] = 1
    type: Literal["AlertAbandoned"] = "AlertAbandoned"
    version: Literal[1] = 1

    abandoned_at: UtcDatetime
    reason: AbandonReason
    error: Detail = Field(min_length=1)


AlertOutcome = AlertDelivered | AlertAbandoned


def bounded(text: str) -> str:
    """`text` cut to `MAX_DETAIL` characters, marking the cut, so a long reply still fits."""
    if len(text) <= MAX_DETAIL:
        return text
    return text[: MAX_DETAIL - 1] + "…"
