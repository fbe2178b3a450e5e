"""Errors of the forecast rules. They name the field and the rule, like every domain error."""

from __future__ import annotations

from schemas.errors import AllotmentError


class ForecastInputError(AllotmentError):
    """A forecast was asked with input that breaks a rule (a naive time, a gap, a bad length)."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")
