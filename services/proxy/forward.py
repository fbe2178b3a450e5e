"""Forwarding one request upstream and relaying the answer, capturing usage on the way.

JSON answers are relayed whole and parsed for usage only after the client has them. SSE answers
are relayed chunk by chunk as they arrive; a tracker reads the events for usage beside them.
Only when the proxy itself asked for OpenAI's usage chunk does it relay whole events, so it can
drop that one chunk. Upstream errors pass through untouched, in the provider's own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import aiohttp

from schemas.errors import AllotmentError
from services.proxy.routes import Route
from services.proxy.usage import SseSplitter, StreamTracker, Tokens, json_usage

_DROP_RESPONSE = frozenset(
    {b"content-length", b"content-encoding", b"transfer-encoding", b"connection", b"keep-alive"}
)
_UPSTREAM_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class StreamInterrupted(AllotmentError):
    """The upstream broke a stream off; the client's connection is closed the same way."""

    def __init__(self, provider: str, cause: str) -> None:
        self.provider = provider
        self.cause = cause
        super().__init__(f"{provider} stream interrupted: {cause}")


@dataclass(slots=True)
class Outcome:
    """What came back: usage (None when nothing was used) and how sure we are of it."""

    tokens: Tokens | None
    usage_status: str = "reported"
    response_model: str | None = None
    interrupted: StreamInterrupted | None = None
    status: int = 200

    def raise_if_interrupted(self) -> None:
        if self.interrupted is not None:
            raise self.interrupted


async def forward(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: list[tuple[str, str]],
    route: Route,
    extra_headers: list[tuple[bytes, bytes]],
    strip_usage: bool,
    estimate_in: int,
    receive: Any,
    send: Any,
) -> Outcome:
    try:
        response = await session.post(url, data=payload, headers=headers)
    except _UPSTREAM_ERRORS as exc:
        message = f"upstream {route.provider} unreachable: {exc!r}"
        await _send_whole(send, 502, extra_headers, route.error_body(502, message))
        return Outcome(None, "missing", status=502)
    try:
        out_headers = [
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.lower() not in _DROP_RESPONSE
        ]
        out_headers.extend(extra_headers)
        content_type = response.headers.get("content-type", "")
        if response.status == 200 and content_type.startswith("text/event-stream"):
            return await _relay_stream(
                response, out_headers, route, strip_usage, estimate_in, receive, send
            )
        try:
            body = await response.read()
        except _UPSTREAM_ERRORS as exc:
            message = f"upstream {route.provider} broke off its answer: {exc!r}"
            await _send_whole(send, 502, extra_headers, route.error_body(502, message))
            return Outcome(None, "missing", status=502)
        out_headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": out_headers}
        )
        await send({"type": "http.response.body", "body": body})
        if not 200 <= response.status < 300:
            return Outcome(None, "missing", status=response.status)
        tokens, model = json_usage(route.family, body)
        if tokens is None:
            return Outcome(Tokens(), "missing", model, status=response.status)
        return Outcome(tokens, "reported", model, status=response.status)
    finally:
        response.release()


async def _relay_stream(
    response: aiohttp.ClientResponse,
    headers: list[tuple[bytes, bytes]],
    route: Route,
    strip_usage: bool,
    estimate_in: int,
    receive: Any,
    send: Any,
) -> Outcome:
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    tracker = StreamTracker(route.family, strip_usage)
    splitter = SseSplitter()
    gone = asyncio.ensure_future(receive())  # completes on http.disconnect
    cause: str | None = None
    try:
        async for chunk in response.content.iter_any():
            if gone.done():
                cause = "client disconnected"
                break
            events = splitter.feed(chunk)
            if strip_usage:
                out = b"".join(event for event in events if tracker.feed(event))
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                for event in events:
                    tracker.feed(event)
    except _UPSTREAM_ERRORS as exc:
        cause = f"upstream: {exc!r}"
    finally:
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await gone
    if cause is None:
        rest = splitter.rest()
        if strip_usage and rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    if tracker.complete and tracker.tokens is not None and cause is None:
        return Outcome(tracker.tokens, "reported", tracker.model)
    outcome = Outcome(tracker.estimate(estimate_in), "estimated", tracker.model)
    if cause is not None:
        response.close()  # stop the generation upstream; the connection is not reusable
        if cause.startswith("upstream"):
            outcome.interrupted = StreamInterrupted(route.provider, cause)
    return outcome


async def _send_whole(
    send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
