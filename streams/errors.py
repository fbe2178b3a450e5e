"""The pure domain's errors. Each carries its context as fields, so an edge can report it.

They subclass `schemas.errors.AllotmentError`; edges map them to HTTP codes or dead letters.
"""

from __future__ import annotations

from schemas.errors import AllotmentError


class NaiveDatetime(AllotmentError):
    """A datetime without an offset reached period arithmetic: its instant is ambiguous."""

    def __init__(self, field: str, value: object) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}: must carry a UTC offset, got naive {value!r}")


class BadPeriodKey(AllotmentError):
    """A period key is none of `YYYY-MM-DD`, `YYYY-Www` or `YYYY-MM`."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"period_key: must be YYYY-MM-DD, YYYY-Www or YYYY-MM, got {key!r}")


class StaleRevision(AllotmentError):
    """A budget event's revision is not the next one (a replayed or a lost event).

    `event_revision <= current_revision` means the event was already applied (redelivery);
    a larger gap means an event is missing.
    """

    def __init__(self, budget_id: str, current_revision: int | None, event_revision: int) -> None:
        self.budget_id = budget_id
        self.current_revision = current_revision
        self.event_revision = event_revision
        expected = 1 if current_revision is None else current_revision + 1
        super().__init__(
            f"revision: budget {budget_id!r} expects revision {expected}, got {event_revision}"
        )

    @property
    def already_applied(self) -> bool:
        """True when the event is a replay of one the state already contains."""
        return self.current_revision is not None and self.event_revision <= self.current_revision


class BudgetNotFound(AllotmentError):
    """An event or a request names a budget that does not exist (yet)."""

    def __init__(self, budget_id: str) -> None:
        self.budget_id = budget_id
        super().__init__(f"budget_id: no budget {budget_id!r}")


class BudgetAlreadyRetired(AllotmentError):
    """A retired budget takes no further configuration events; its history stays."""

    def __init__(self, budget_id: str, revision: int) -> None:
        self.budget_id = budget_id
        self.revision = revision
        super().__init__(f"budget_id: budget {budget_id!r} was retired at revision {revision}")


class TenantMismatch(AllotmentError):
    """An event names another tenant than the budget's: tenants never touch each other's data."""

    def __init__(self, budget_id: str, budget_tenant: str, event_tenant: str) -> None:
        self.budget_id = budget_id
        self.budget_tenant = budget_tenant
        self.event_tenant = event_tenant
        super().__init__(
            f"tenant: budget {budget_id!r} belongs to {budget_tenant!r}, event names "
            f"{event_tenant!r}"
        )


class BudgetIdMismatch(AllotmentError):
    """An event for one budget was folded into another budget's state (an adapter bug)."""

    def __init__(self, budget_id: str, event_budget_id: str) -> None:
        self.budget_id = budget_id
        self.event_budget_id = event_budget_id
        super().__init__(f"budget_id: state is for {budget_id!r}, event is for {event_budget_id!r}")


class OutOfOrderCharge(AllotmentError):
    """Charge lines of one (budget, source partition) arrived out of position order.

    The watermark would silently skip the lower line, so the fold refuses the batch instead.
    """

    def __init__(
        self,
        budget_id: str,
        source_partition: int,
        position: tuple[int, int],
        previous: tuple[int, int],
    ) -> None:
        self.budget_id = budget_id
        self.source_partition = source_partition
        self.position = position
        self.previous = previous
        super().__init__(
            f"position: budget {budget_id!r} partition {source_partition}: {position} follows "
            f"{previous} in one charge (lines must be in increasing position order)"
        )


class InvalidState(AllotmentError):
    """A stored state object (`from_dict`) does not have the shape this build writes."""

    def __init__(self, kind: str, field: str, rule: str) -> None:
        self.kind = kind
        self.field = field
        self.rule = rule
        super().__init__(f"invalid {kind}: {field}: {rule}")


class NoDecisions(AllotmentError):
    """`most_restrictive` was given nothing to choose from."""

    def __init__(self) -> None:
        super().__init__("decisions: need at least one policy decision")
