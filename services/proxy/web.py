"""Serving the proxy's ASGI app with aiohttp's low-level HTTP server (`server="aiohttp"`).

The alternative to uvicorn, kept because the choice is a measurement: aiohttp's server coalesces
a response's head and body into one socket write where uvicorn makes two, yet on this machine the
proxy used about 285 µs of CPU per request under aiohttp against about 260 µs under uvicorn with
httptools (tests/bench/proxy.py, `proxy_cpu_us_per_request`), so uvicorn is the default. The ASGI
app stays the single implementation; this adapter maps its messages onto aiohttp responses.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web
from aiohttp.web_server import Server
from multidict import CIMultiDict

_WRITE_ERRORS = (ConnectionError, RuntimeError)


class AsgiOnAiohttp:
    """An aiohttp request handler that runs one ASGI HTTP app call per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.in_flight = 0

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        scope = {
            "type": "http",
            "method": request.method,
            "path": request.path,
            "headers": [(name.lower(), value) for name, value in request.raw_headers],
        }
        exchange = _Exchange(request, body)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            exchange.gone.cancel()
        if exchange.response is None:
            raise RuntimeError("the ASGI app returned without a response")
        return exchange.response


class _Exchange:
    __slots__ = ("body", "gone", "request", "response", "start")

    def __init__(self, request: web.BaseRequest, body: bytes) -> None:
        self.request = request
        self.body: bytes | None = body
        self.start: dict[str, Any] | None = None
        self.response: web.StreamResponse | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.shield(self.gone)
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if self.gone.done():
            return
        start = self.start
        if start is None:
            raise RuntimeError("http.response.body before http.response.start")
        more = message.get("more_body", False)
        chunk = message.get("body", b"")
        try:
            if self.response is None:
                headers = CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in start["headers"]
                    if name != b"content-length"
                )
                if not more:
                    response = web.Response(status=start["status"], headers=headers, body=chunk)
                    self.response = response
                    await response.prepare(self.request)
                    await response.write_eof()
                    return
                self.response = web.StreamResponse(status=start["status"], headers=headers)
                await self.response.prepare(self.request)
            if chunk:
                await self.response.write(chunk)
            if not more:
                await self.response.write_eof()
        except _WRITE_ERRORS:
            if not self.gone.done():
                self.gone.set_result(None)  # the client went away; the app sees a disconnect


async def serve_aiohttp(
    app: Any, sock: socket.socket, stop: asyncio.Event, grace_s: float = 30.0
) -> None:
    """Serve `app` on `sock` until `stop` is set; then let requests in flight finish (up to
    `grace_s`) and close the idle keep-alive connections."""
    handler = AsgiOnAiohttp(app)
    server = Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, sock=sock, backlog=4096)
    try:
        await stop.wait()
    finally:
        listener.close()
        deadline = loop.time() + grace_s
        while handler.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await server.shutdown(0.1)
        await listener.wait_closed()
