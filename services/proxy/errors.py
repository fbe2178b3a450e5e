"""The proxy's own errors; the HTTP edge maps them to each provider's error shape."""

from __future__ import annotations

from schemas.errors import AllotmentError


class ProxyConfigError(AllotmentError):
    """A setting or the virtual-key file breaks a rule; names the setting and the rule."""

    def __init__(self, setting: str, rule: str) -> None:
        self.setting = setting
        self.rule = rule
        super().__init__(f"{setting}: {rule}")


class BadClientRequest(AllotmentError):
    """The client's request cannot be forwarded as it is (HTTP 400); names the field."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")
