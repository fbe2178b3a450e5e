"""The Anthropic dialect: the Messages API."""

from __future__ import annotations

from typing import Any

from services.proxy.errors import BadClientRequest
from services.proxy.routes import Route, dumps

_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
}
_HOUR = 3_600


class MessagesRoute(Route):
    path = "/v1/messages"
    provider = "anthropic"
    family = "anthropic"
    output_fields = ("max_tokens",)

    def validate(self, body: Any) -> dict[str, Any]:
        checked = super().validate(body)
        messages = checked.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadClientRequest("messages", "is required and must be a non-empty list")
        max_tokens = checked.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadClientRequest("max_tokens", "is required and must be a positive integer")
        return checked

    def error_body(self, status: int, message: str) -> bytes:
        kind = _KINDS.get(status, "api_error")
        return dumps({"type": "error", "error": {"type": kind, "message": message}})

    def apply_concise(self, body: dict[str, Any], prompt: str) -> None:
        # Appended, not prepended: the cached prefix of the system prompt stays intact.
        system = body.get("system")
        if isinstance(system, list):
            body["system"] = [*system, {"type": "text", "text": prompt}]
        elif isinstance(system, str) and system:
            body["system"] = f"{system}\n\n{prompt}"
        else:
            body["system"] = prompt

    def apply_cache_ttl(self, body: dict[str, Any], seconds: int) -> None:
        if seconds >= _HOUR:
            return
        for block in _cache_blocks(body):
            control = block.get("cache_control")
            if isinstance(control, dict) and control.get("ttl") not in (None, "5m"):
                control["ttl"] = "5m"


def _cache_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in (body.get("system"), body.get("tools")):
        if isinstance(part, list):
            blocks.extend(b for b in part if isinstance(b, dict))
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks.extend(b for b in content if isinstance(b, dict))
    return blocks


MESSAGES = MessagesRoute()
