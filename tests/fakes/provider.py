"""A local fake of the OpenAI and Anthropic HTTP APIs, speaking their real wire formats.

Used wherever a test or benchmark needs an upstream that behaves like the providers: JSON and
SSE responses with the providers' usage blocks, errors in each provider's shape, and streams that
break off. It records what it received, so a test can assert what really went upstream (for
example the rewritten model of a degraded request).

Per-request control through headers (the proxy forwards them):
- `x-fake-usage`: JSON object overriding the token counts, keys `input`, `output`, `cached`
  (OpenAI cached_tokens / Anthropic cache_read_input_tokens), `cache_write` (Anthropic
  cache_creation_input_tokens), `reasoning`.
- `x-fake-status`: answer with this HTTP status and an error body in the provider's shape.
- `x-fake-interrupt`: cut a stream off after the first content chunk (no usage block).
- `x-fake-delay-ms`: hold the request this long before answering.
- `x-fake-chunk-delay-ms`: pause this long between the chunks of a chat stream.

With `FakeProvider(compress=True)` JSON answers are encoded as the request's Accept-Encoding
offers, as providers behind a CDN do: `br` first (real brotli when the module is installed,
otherwise bytes only a brotli decoder would be asked to read), then `gzip`.

Default token counts are deterministic: input = len(body) // 8 (at least 1), output =
min(max_tokens, 20). Run standalone with `python tests/fakes/provider.py --port 8011`.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DEFAULT_OUTPUT = 20


@dataclass
class Received:
    """One request as the fake provider saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Usage:
    input: int
    output: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass
class FakeProvider:
    """The fake upstream. `async with FakeProvider() as fake:` serves on `fake.url`."""

    host: str = "127.0.0.1"
    port: int = 0
    record: bool = True
    compress: bool = False
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_encode_as_offered] if self.compress else [])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def start(self) -> FakeProvider:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProvider:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def last(self, path: str | None = None) -> Received:
        for item in reversed(self.received):
            if path is None or item.path == path:
                return item
        raise LookupError(f"the fake provider received nothing on {path!r}")

    # -- common -------------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> tuple[dict[str, Any], Usage] | web.Response:
        raw = await request.read()
        body: dict[str, Any] = orjson.loads(raw) if raw else {}
        if self.record:
            self.received.append(Received(request.path, dict(request.headers), body))
        delay = request.headers.get("x-fake-delay-ms")
        if delay:
            await asyncio.sleep(int(delay) / 1000)
        status = request.headers.get("x-fake-status")
        if status:
            anthropic = request.path == "/v1/messages"
            return _error(int(status), "fake upstream error", anthropic)
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        cap = cap or body.get("max_output_tokens") or DEFAULT_OUTPUT
        usage = Usage(input=max(1, len(raw) // 8), output=min(int(cap), DEFAULT_OUTPUT))
        override = request.headers.get("x-fake-usage")
        if override:
            usage = Usage(**{**usage.__dict__, **orjson.loads(override)})
        return body, usage

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}fake"

    # -- OpenAI -------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        got = await self._receive(request)
        if isinstance(got, web.Response):
            return got
        body, usage = got
        model, cid, created = body.get("model", ""), self._id("chatcmpl-"), int(time.time())
        oai_usage = _openai_usage(usage)
        if not body.get("stream"):
            return _json(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": _text(usage.output)},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": oai_usage,
                    "system_fingerprint": "fp_fake",
                }
            )
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        extra = {"usage": None} if include else {}

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _data({**base, "choices": [choice], **extra})

        resp = await _sse(request)
        pause = int(request.headers.get("x-fake-chunk-delay-ms", "0")) / 1000
        await resp.write(chunk({"role": "assistant", "content": ""}, None))
        await resp.write(chunk({"content": "tok "}, None))
        if request.headers.get("x-fake-interrupt"):
            return _cut(request, resp)
        for _ in range(5 if pause else 0):
            await asyncio.sleep(pause)
            await resp.write(chunk({"content": "tok "}, None))
        await resp.write(chunk({"content": _text(usage.output - 1)}, None))
        await resp.write(chunk({}, "stop"))
        if include:
            await resp.write(_data({**base, "choices": [], "usage": oai_usage}))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        got = await self._receive(request)
        if isinstance(got, web.Response):
            return got
        body, usage = got
        rid = self._id("resp_")
        response = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": body.get("model", ""),
            "output": [
                {
                    "type": "message",
                    "id": self._id("msg_"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": _text(usage.output), "annotations": []}
                    ],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": usage.input,
                "input_tokens_details": {"cached_tokens": usage.cached},
                "output_tokens": usage.output,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning},
                "total_tokens": usage.input + usage.output,
            },
        }
        if not body.get("stream"):
            return _json(response)
        resp = await _sse(request)
        created = {**response, "status": "in_progress", "output": [], "usage": None}
        seq = itertools.count()
        await resp.write(
            _event(
                "response.created",
                {"type": "response.created", "response": created, "sequence_number": next(seq)},
            )
        )
        delta = {
            "type": "response.output_text.delta",
            "item_id": "msg",
            "output_index": 0,
            "content_index": 0,
            "delta": "tok ",
            "sequence_number": next(seq),
        }
        await resp.write(_event("response.output_text.delta", delta))
        if request.headers.get("x-fake-interrupt"):
            return _cut(request, resp)
        done = {"type": "response.completed", "response": response, "sequence_number": next(seq)}
        await resp.write(_event("response.completed", done))
        return resp

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        got = await self._receive(request)
        if isinstance(got, web.Response):
            return got
        body, usage = got
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]} for i in range(count)
        ]
        return _json(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", ""),
                "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input},
            }
        )

    # -- Anthropic ----------------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        got = await self._receive(request)
        if isinstance(got, web.Response):
            return got
        body, usage = got
        final_usage = {
            "input_tokens": usage.input,
            "cache_creation_input_tokens": usage.cache_write,
            "cache_read_input_tokens": usage.cached,
            "output_tokens": usage.output,
        }
        message = {
            "id": self._id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": [{"type": "text", "text": _text(usage.output)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": final_usage,
        }
        if not body.get("stream"):
            return _json(message)
        resp = await _sse(request)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**final_usage, "output_tokens": 1},
        }
        await resp.write(_event("message_start", {"type": "message_start", "message": start}))
        block = {"type": "text", "text": ""}
        await resp.write(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
        )
        await resp.write(_event("ping", {"type": "ping"}))
        text = {"type": "text_delta", "text": "tok "}
        await resp.write(
            _event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text}
            )
        )
        if request.headers.get("x-fake-interrupt"):
            return _cut(request, resp)
        await resp.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        # Two cumulative deltas: a reader that adds them up instead of taking the last is wrong.
        half = {"output_tokens": max(1, usage.output // 2)}
        for part in (half, {"output_tokens": usage.output}):
            await resp.write(
                _event("message_delta", {"type": "message_delta", "delta": stop, "usage": part})
            )
        await resp.write(_event("message_stop", {"type": "message_stop"}))
        return resp


@web.middleware
async def _encode_as_offered(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    if response.prepared or not isinstance(response, web.Response) or response.body is None:
        return response  # a stream already on its way
    offered = {
        p.split(";")[0].strip() for p in request.headers.get("accept-encoding", "").split(",")
    }
    body = bytes(response.body)  # type: ignore[arg-type]
    if "br" in offered:
        try:
            import brotli  # type: ignore[import-not-found]
        except ImportError:
            encoded = b"\x8b\x03\x80not-decodable-without-brotli\x03"
        else:
            encoded = brotli.compress(body)
        response.body, response.headers["content-encoding"] = encoded, "br"
    elif "gzip" in offered:
        response.body, response.headers["content-encoding"] = gzip.compress(body), "gzip"
    return response


def _openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _text(words: int) -> str:
    return "tok " * max(0, words)


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, anthropic: bool) -> web.Response:
    if anthropic:
        kind = "rate_limit_error" if status == 429 else "invalid_request_error"
        if status >= 500:
            kind = "api_error"
        return _json({"type": "error", "error": {"type": kind, "message": message}}, status)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return _json({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
    )
    await resp.prepare(request)
    return resp


def _cut(request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
    """Break the connection mid-stream, as a crashed upstream or a network fault would."""
    resp.force_close()
    if request.transport is not None:
        request.transport.abort()
    return resp


async def _serve(host: str, port: int) -> None:
    fake = FakeProvider(host=host, port=port, record=False)
    await fake.start()
    print(f"fake provider on {fake.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.host, args.port))
    else:
        uvloop.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
