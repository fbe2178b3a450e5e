"""The OpenAI dialect: chat completions, responses and embeddings."""

from __future__ import annotations

from typing import Any

from services.proxy.errors import BadClientRequest
from services.proxy.routes import Route, dumps

_KINDS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "budget_exceeded",
    502: "upstream_error",
    503: "policy_unavailable",
}
_CODES = {401: "invalid_api_key", 429: "budget_exceeded"}
_DAY = 86_400


class OpenAIRoute(Route):
    provider = "openai"

    def error_body(self, status: int, message: str) -> bytes:
        return dumps(
            {
                "error": {
                    "message": message,
                    "type": _KINDS.get(status, "server_error"),
                    "param": None,
                    "code": _CODES.get(status),
                }
            }
        )

    def apply_cache_ttl(self, body: dict[str, Any], seconds: int) -> None:
        if seconds < _DAY:
            body["prompt_cache_retention"] = "in_memory"


class ChatRoute(OpenAIRoute):
    path = "/v1/chat/completions"
    family = "chat"
    output_fields = ("max_completion_tokens", "max_tokens")

    def validate(self, body: Any) -> dict[str, Any]:
        checked = super().validate(body)
        messages = checked.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadClientRequest("messages", "is required and must be a non-empty list")
        options = checked.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise BadClientRequest("stream_options", "must be an object")
        return checked

    def prepare_stream(self, body: dict[str, Any]) -> bool:
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            return False
        body["stream_options"] = {**options, "include_usage": True}
        return True

    def apply_concise(self, body: dict[str, Any], prompt: str) -> None:
        body["messages"] = [{"role": "system", "content": prompt}, *body["messages"]]


class ResponsesRoute(OpenAIRoute):
    path = "/v1/responses"
    family = "responses"
    output_fields = ("max_output_tokens",)

    def apply_concise(self, body: dict[str, Any], prompt: str) -> None:
        instructions = body.get("instructions")
        body["instructions"] = f"{instructions}\n\n{prompt}" if instructions else prompt


class EmbeddingsRoute(OpenAIRoute):
    path = "/v1/embeddings"
    family = "embeddings"

    def validate(self, body: Any) -> dict[str, Any]:
        checked = super().validate(body)
        if "input" not in checked:
            raise BadClientRequest("input", "is required")
        if checked.get("stream"):
            raise BadClientRequest("stream", "embeddings do not stream")
        return checked

    def apply_cache_ttl(self, body: dict[str, Any], seconds: int) -> None:
        return None


CHAT = ChatRoute()
RESPONSES = ResponsesRoute()
EMBEDDINGS = EmbeddingsRoute()
