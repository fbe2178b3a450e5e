"""Delivery outcomes as events: built from a claimed outbox row, folded back into a history.

Both directions are pure (time is an argument), so the delivery loop, a replay of the
`alert-deliveries` topic and the tests all use the same two rules:
- `outcome_event` says what an attempt's final outcome looks like on the wire;
- `fold` rebuilds, per alert id, the outcome the outbox holds. A crash between publishing an
  outcome and recording it in the outbox repeats the event with the same alert id, and a
  manual resend yields a later one; the outcome with the latest `last_attempt_at` is current
  (the outbox's fence lets only the latest claim record an outcome), ties going to the later
  record in the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.alerts import AbandonReason, AlertAbandoned, AlertDelivered, AlertOutcome, bounded
from schemas.base import Event
from services.alerts.outbox import ClaimedRow


@dataclass(frozen=True)
class Final:
    """How an attempt ended for good: `delivered` with the receiver's reply, or abandoned for
    `reason` with the last error as `detail`."""

    reason: AbandonReason | None
    detail: str

    @property
    def state(self) -> str:
        """The outbox state this outcome sets."""
        return "delivered" if self.reason is None else "failed"


def outcome_event(row: ClaimedRow, final: Final, at: datetime) -> AlertOutcome:
    """The event for the final outcome of `row`'s current attempt, decided at `at`."""
    common: dict[str, Any] = {
        "alert_id": row.delivery_id,
        "tenant": row.tenant,
        "budget_id": row.budget_id,
        "period_key": row.period_key,
        "kind": row.kind,
        "discriminator": row.discriminator,
        "action": row.action,
        "channel": row.channel,
        "channel_type": row.channel_type,
        "source": {
            "type": row.source_type or SOURCE_TYPES.get(row.kind, row.kind),
            "topic": row.source_topic,
            "partition": row.source_partition,
            "offset": row.source_offset,
            "occurred_at": row.event_at,
        },
        "attempts": row.attempts,
        "first_attempt_at": row.first_attempt_at,
        "last_attempt_at": row.last_attempt_at,
    }
    if final.reason is None:
        return AlertDelivered(**common, delivered_at=at, receiver_status=bounded(final.detail))
    error = bounded(final.detail) or "(no error text)"
    return AlertAbandoned(**common, abandoned_at=at, reason=final.reason, error=error)


SOURCE_TYPES = {
    "threshold": "ThresholdCrossed",
    "projected_overrun": "ProjectedOverrun",
    "policy_changed": "PolicyChanged",
    "period_reset": "PolicyChanged",
}
"""The signal type of each alert kind, for rows enqueued before the type was stored."""


def fold(
    events: Iterable[Event], history: dict[str, AlertOutcome] | None = None
) -> dict[str, AlertOutcome]:
    """alert id -> its current outcome, from outcome events in log order (others are ignored).

    Folding a repeat changes nothing; folding the topic from offset zero gives the outcome the
    outbox holds for every alert that reached one.
    """
    result = dict(history or {})
    for event in events:
        if not isinstance(event, AlertDelivered | AlertAbandoned):
            continue
        known = result.get(event.alert_id)
        if known is None or event.last_attempt_at >= known.last_attempt_at:
            result[event.alert_id] = event
    return result


def state_of(event: AlertOutcome) -> str:
    """The outbox state an outcome event stands for."""
    return "delivered" if isinstance(event, AlertDelivered) else "failed"


def row_facts(event: AlertOutcome) -> dict[str, Any]:
    """The outbox columns an outcome settles: what the delivery loop records when it ends a
    round (`delivery.py`), so a row rebuilt from the topic reads as the original did."""
    ended: dict[str, Any] = (
        {"delivered_at": event.delivered_at, "last_error": None}
        if isinstance(event, AlertDelivered)
        else {"delivered_at": None, "last_error": event.error}
    )
    return {
        "state": state_of(event),
        "attempts": event.attempts,
        "first_attempt_at": event.first_attempt_at,
        "last_attempt_at": event.last_attempt_at,
        **ended,
    }
