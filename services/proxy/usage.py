"""Token counts from provider responses, JSON or SSE, mapped onto the usage contract's parts.

Conventions differ by provider and must not be double counted:
- OpenAI: `prompt_tokens` includes `cached_tokens`; `completion_tokens` includes
  `reasoning_tokens`. So input_uncached = prompt - cached, output = completion.
- Anthropic: `input_tokens` excludes `cache_creation_input_tokens` and
  `cache_read_input_tokens`; the three are disjoint. In a stream, `message_delta` usage is
  cumulative: the last one wins, they are never added up.
A stream that ends before its usage block gives an estimate, recorded as `estimated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class Tokens:
    """Disjoint token parts, as `UsageRecorded` wants them."""

    input_uncached: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0

    @property
    def input_total(self) -> int:
        return self.input_uncached + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        return self.input_total + self.output


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: dict[str, Any], name: str, field: str) -> int:
    details = usage.get(name)
    return _int(details.get(field)) if isinstance(details, dict) else 0


def openai_tokens(usage: Any) -> Tokens | None:
    """Chat completions and embeddings (`prompt_tokens`) or Responses (`input_tokens`)."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage:
        prompt, output = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        cached = _details(usage, "prompt_tokens_details", "cached_tokens")
        reasoning = _details(usage, "completion_tokens_details", "reasoning_tokens")
    elif "input_tokens" in usage:
        prompt, output = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        cached = _details(usage, "input_tokens_details", "cached_tokens")
        reasoning = _details(usage, "output_tokens_details", "reasoning_tokens")
    else:
        return None
    cached = min(cached, prompt)
    return Tokens(prompt - cached, cached, 0, output, min(reasoning, output))


def anthropic_tokens(usage: Any, into: Tokens | None = None) -> Tokens | None:
    """Anthropic's disjoint parts; fields absent from `usage` keep their value in `into`."""
    if not isinstance(usage, dict):
        return into
    tokens = into if into is not None else Tokens()
    if "input_tokens" in usage and usage["input_tokens"] is not None:
        tokens.input_uncached = _int(usage["input_tokens"])
    if usage.get("cache_creation_input_tokens") is not None:
        tokens.cache_write = _int(usage["cache_creation_input_tokens"])
    if usage.get("cache_read_input_tokens") is not None:
        tokens.cache_read = _int(usage["cache_read_input_tokens"])
    if usage.get("output_tokens") is not None:
        tokens.output = _int(usage["output_tokens"])
    return tokens


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
                self.tokens = anthropic_tokens(message.get("usage"), Tokens())
                self.model = message.get("model") or self.model
        elif name == b"message_delta":
            self.tokens = anthropic_tokens(_loads(data).get("usage"), self.tokens or Tokens())
        elif name == b"message_stop":
            self.complete = True
        elif name == b"content_block_delta":
            self.content_events += 1

    def estimate(self, input_estimate: int) -> Tokens:
        """Best guess for a stream that broke off: what was seen, plus one token per chunk."""
        tokens = self.tokens or Tokens(input_uncached=input_estimate)
        if tokens.input_total == 0:
            tokens.input_uncached = input_estimate
        tokens.output = max(tokens.output, self.content_events)
        return tokens


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
