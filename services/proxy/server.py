"""The proxy's composition root: builds every dependency at start, tears them down at stop.

`Proxy` is what tests and the CLI use: `await proxy.start()` opens the upstream session, the
spool, the usage sender and the policy feed; `await proxy.serve(sock)` serves HTTP with uvicorn
(httptools parser; uvloop when the CLI runs it); `await proxy.stop()` spools whatever usage is
still in memory and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from datetime import UTC, datetime

import aiohttp
import uvicorn

from services.proxy.app import ProxyApp
from services.proxy.emitter import UsageEmitter, UsageSink
from services.proxy.enforcement import PolicyCache
from services.proxy.feed import PolicyFeed
from services.proxy.keys import KeyStore
from services.proxy.metrics import ProxyCollector
from services.proxy.settings import ProxySettings
from services.proxy.spool import Spool


def _now() -> datetime:
    return datetime.now(UTC)


class Proxy:
    """One running proxy: the ASGI app and the background machinery around it."""

    def __init__(self, settings: ProxySettings, keys: KeyStore | None = None) -> None:
        self.settings = settings
        self.keys = (
            keys if keys is not None else KeyStore.load(settings.keys_file, settings.keys_json)
        )
        self.cache = PolicyCache()
        self.app: ProxyApp | None = None
        self.emitter: UsageEmitter | None = None
        self.feed: PolicyFeed | None = None
        self._session: aiohttp.ClientSession | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> ProxyApp:
        settings = self.settings
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_pool_size, ttl_dns_cache=300, keepalive_timeout=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            # Never keep an upstream's cookies: one tenant's would ride on another's requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        spool = Spool(settings.spool_dir)
        self.emitter = UsageEmitter(
            spool,
            UsageSink(settings.kafka_bootstrap, settings.topic_prefix),
            _now,
            settings.flush_interval_s,
            settings.flush_max_events,
        )
        self.emitter.start()
        if settings.follow_policies:
            self.feed = PolicyFeed(settings.kafka_bootstrap, settings.topic_prefix, self.cache)
            self.feed.start()
        self.app = ProxyApp(settings, self.keys, self.cache, self.emitter, self._session)
        self.app.collector = ProxyCollector(self.app.requests, self.cache, self.emitter, self.feed)
        return self.app

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Serve HTTP until `stop()`; binds settings.host:port unless given a socket."""
        if self.app is None:
            raise RuntimeError("Proxy.start() was not called")
        if sock is None:
            sock = _listen(self.settings.host, self.settings.port)
        if self.settings.server == "aiohttp":
            from services.proxy.web import serve_aiohttp

            await serve_aiohttp(self.app, sock, self._stop)
            return
        config = uvicorn.Config(
            self.app,
            http="httptools",
            loop="none",
            lifespan="off",
            access_log=False,
            server_header=False,
            date_header=False,
            log_level="warning",
            backlog=4096,
            proxy_headers=False,
        )
        self._server = uvicorn.Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        await self._stop.wait()
        self._server.should_exit = True
        await serving

    async def serve_in_background(self) -> str:
        """Start serving on an ephemeral port (tests, benchmarks); returns the base URL."""
        sock = _listen(self.settings.host, 0)
        port = sock.getsockname()[1]
        self._serving = asyncio.create_task(self.serve(sock))
        return f"http://{self.settings.host}:{port}"

    async def stop(self) -> None:
        self._stop.set()
        if self._serving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
            self._serving = None
        if self.feed is not None:
            await self.feed.stop()
        if self.emitter is not None:
            await self.emitter.stop(self.settings.drain_timeout_s)
            self.emitter.spool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run(settings: ProxySettings) -> None:
    """Run until SIGINT/SIGTERM (the CLI's entry point); then stop cleanly, spooling usage."""
    proxy = Proxy(settings)
    await proxy.start()
    gc.freeze()  # start-up objects never need collecting: shorter GC pauses on the hot path
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, proxy._stop.set)
    try:
        await proxy.serve()
    finally:
        await proxy.stop()


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock
