"""Errors of the alerts service; each carries the context an operator needs to act."""

from __future__ import annotations

from schemas.errors import AllotmentError


class AlertConfigError(AllotmentError):
    """The routing/channel configuration breaks a rule; `field` names where."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"alerts config: {field}: {rule}")


class DeliveryFailed(AllotmentError):
    """A channel did not accept a delivery. `retryable` says whether another try may succeed.

    `retry_after` (seconds) is the receiver's own hint, e.g. from an HTTP 429 Retry-After.
    """

    def __init__(
        self, channel: str, reason: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.channel = channel
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{channel}: {reason}")


class OutboxRowNotFound(AllotmentError):
    """`allotment alerts resend ID` named a row that does not exist."""

    def __init__(self, row_id: int) -> None:
        self.row_id = row_id
        super().__init__(f"no alert outbox row with id {row_id}")


class NotResendable(AllotmentError):
    """A row in `state` cannot be resent (a delivered row needs --force)."""

    def __init__(self, row_id: int, state: str) -> None:
        self.row_id = row_id
        self.state = state
        super().__init__(
            f"alert {row_id} is {state}; only failed, suppressed or pending rows are resent "
            "(use --force to send a delivered one again)"
        )
