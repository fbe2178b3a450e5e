"""Token counts from provider responses, JSON or SSE, mapped onto the usage contract's parts.

Which count includes which is each provider's convention, kept once in
`services.common.token_conventions` and shared with ingest. The proxy reads it with the `clamp`
policy: the upstream has already answered the client, so an impossible count (cached above the
prompt total, reasoning above output, a negative or non-integer count) is repaired rather than
refused, and the usage is still recorded. What is the proxy's own: which family a route speaks,
and in an Anthropic stream `message_delta` usage is cumulative: the last one wins, they are
never added up. A stream that ends before its usage block gives an estimate, recorded as
`estimated`.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.common import token_conventions as conventions
from services.common.token_conventions import ZERO, TokenParts, clamp

Tokens = TokenParts
"""Disjoint token parts, as `UsageRecorded` wants them (the shared type, under the proxy's name)."""


def openai_tokens(usage: Any) -> Tokens | None:
    """Chat completions and embeddings (`prompt_tokens`) or Responses (`input_tokens`)."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        return conventions.openai_chat(usage, policy=clamp)
    if "input_tokens" in usage:
        return conventions.openai_responses(usage, policy=clamp)
    return None


def anthropic_tokens(usage: Any, into: Tokens | None = None) -> Tokens | None:
    """Anthropic's disjoint parts; fields absent from `usage` keep their value in `into`."""
    if not isinstance(usage, dict):
        return into
    return conventions.anthropic(usage, base=ZERO if into is None else into, policy=clamp)


def json_usage(family: str, body: bytes) -> tuple[Tokens | None, str | None]:
    """Tokens and the answering model from a non-streamed response body."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    model = payload.get("model") if isinstance(payload.get("model"), str) else None
    if family == "anthropic":
        return anthropic_tokens(payload.get("usage")), model
    return openai_tokens(payload.get("usage")), model


class StreamTracker:
    """Watches one SSE stream's events for usage; says which event to hide from the client.

    `strip_usage` is set when the proxy added `stream_options.include_usage` to an OpenAI chat
    request on its own: that final usage chunk is then swallowed.
    """

    __slots__ = ("complete", "content_events", "family", "model", "strip_usage", "tokens")

    def __init__(self, family: str, strip_usage: bool = False) -> None:
        self.family = family
        self.strip_usage = strip_usage
        self.tokens: Tokens | None = None
        self.model: str | None = None
        self.complete = False
        self.content_events = 0

    def feed(self, event: bytes) -> bool:
        """Inspect one raw SSE event (ending in a blank line); False = do not forward it."""
        name, data = _split_event(event)
        if data is None:
            return True
        if self.family == "anthropic":
            self._anthropic(name, data)
        elif self.family == "responses":
            self._responses(name, data)
        else:
            return self._chat(data)
        return True

    def _chat(self, data: bytes) -> bool:
        if data == b"[DONE]":
            self.complete = True
            return True
        self.content_events += 1
        if b'"usage":{' not in data and b'"usage": {' not in data:
            return True
        payload = _loads(data)
        tokens = openai_tokens(payload.get("usage"))
        if tokens is None:
            return True
        self.tokens = tokens
        self.model = payload.get("model") or self.model
        return not (self.strip_usage and not payload.get("choices"))

    def _responses(self, name: bytes | None, data: bytes) -> None:
        if name not in (b"response.completed", b"response.incomplete", b"response.failed"):
            self.content_events += 1
            return
        response = _loads(data).get("response")
        if isinstance(response, dict):
            self.tokens = openai_tokens(response.get("usage")) or self.tokens
            self.model = response.get("model") or self.model
        self.complete = True

    def _anthropic(self, name: bytes | None, data: bytes) -> None:
        if name == b"message_start":
            message = _loads(data).get("message")
            if isinstance(message, dict):
                self.tokens = anthropic_tokens(message.get("usage"), ZERO)
                self.model = message.get("model") or self.model
        elif name == b"message_delta":
            self.tokens = anthropic_tokens(_loads(data).get("usage"), self.tokens or ZERO)
        elif name == b"message_stop":
            self.complete = True
        elif name == b"content_block_delta":
            self.content_events += 1

    def estimate(self, input_estimate: int) -> Tokens:
        """Best guess for a stream that broke off: what was seen, plus one token per chunk."""
        tokens = self.tokens or ZERO
        if tokens.input_total == 0:
            tokens = tokens._replace(input_uncached=input_estimate)
        return tokens._replace(output=max(tokens.output, self.content_events))


def _loads(data: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _split_event(event: bytes) -> tuple[bytes | None, bytes | None]:
    name: bytes | None = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return name, (b"\n".join(data) if data else None)


class SseSplitter:
    """Cuts a byte stream into whole SSE events (each ending with its blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[bytes] = []
        start = 0
        crlf = b"\r\n\r\n" in buffer
        while True:
            end, width = buffer.find(b"\n\n", start), 2
            if crlf:  # servers may end lines with CRLF; take whichever blank line comes first
                alt = buffer.find(b"\r\n\r\n", start)
                if alt >= 0 and (end < 0 or alt < end):
                    end, width = alt, 4
            if end < 0:
                break
            events.append(buffer[start : end + width])
            start = end + width
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest
