"""The proxy's ASGI application: attribute, decide, forward, answer, record.

A bare ASGI callable rather than a framework: every microsecond here is added to every LLM call
(issue 7's target is 0.5 ms at p50). The upstream client is aiohttp's `ClientSession`, chosen by
measurement (tests/bench/proxy.py prints the figure). Work that the client does not wait for
(parsing a JSON body for usage, building the event) happens after the last byte is sent.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from services.proxy.emitter import UsageEmitter, UsageRecord
from services.proxy.enforcement import PolicyCache, Verdict
from services.proxy.errors import BadClientRequest
from services.proxy.forward import forward
from services.proxy.keys import KeyStore, VirtualKey
from services.proxy.metrics import ProxyCollector, render
from services.proxy.refusal import refusal_message, retry_after
from services.proxy.routes import Route, all_routes, check_name, merge_tags, parse_tags
from services.proxy.settings import ProxySettings
from services.proxy.usage import Tokens

log = logging.getLogger(__name__)

_DROP_REQUEST = frozenset(
    {
        b"host",
        # The upstream client asks for the encodings it can decode: a client's "br" or "zstd"
        # would get an answer the proxy could neither read for usage nor relay (a 502).
        b"accept-encoding",
        b"content-length",
        b"authorization",
        b"x-api-key",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"upgrade",
        b"proxy-authorization",
        b"x-allotment-feature",
        b"x-allotment-tags",
    }
)


class ProxyApp:
    """The ASGI callable. Built by the composition root with everything it needs."""

    def __init__(
        self,
        settings: ProxySettings,
        keys: KeyStore,
        cache: PolicyCache,
        emitter: UsageEmitter,
        session: aiohttp.ClientSession,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.cache = cache
        self.emitter = emitter
        self.session = session
        self.routes: dict[str, Route] = all_routes()
        self.upstream_urls = {
            route.path: settings.upstream(route.provider) + route.path
            for route in self.routes.values()
        }
        self.upstream_auth: dict[str, tuple[str, str]] = {}
        for provider, secret in settings.upstream_keys.items():
            self.upstream_auth[provider] = (
                ("x-api-key", secret)
                if provider == "anthropic"
                else ("authorization", f"Bearer {secret}")
            )
        self._ids = itertools.count()
        self._boot = os.urandom(6).hex()
        self.requests: Counter[tuple[str, int, str]] = Counter()
        self.collector: ProxyCollector | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        route = self.routes.get(scope["path"])
        if route is None or scope["method"] != "POST":
            if scope["path"] in ("/healthz", "/readyz"):
                await self._health(scope["path"], send)
                return
            if scope["path"] == "/metrics" and self.collector is not None:
                body = render(self.collector)
                await _reply(send, 200, body, content_type=CONTENT_TYPE_LATEST.encode())
                return
            route = route or self.routes["/v1/chat/completions"]
            status = 404 if scope["method"] == "POST" else 405
            await _reply(send, status, route.error_body(status, f"no route {scope['path']}"))
            return
        await self._handle(route, scope, receive, send)

    async def _health(self, path: str, send: Any) -> None:
        ready = self.cache.caught_up or path == "/healthz"
        body = orjson.dumps({"ok": ready, "policies_caught_up": self.cache.caught_up})
        await _reply(send, 200 if ready else 503, body)

    async def _handle(self, route: Route, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.time()
        raw = await _read_body(receive, self.settings.max_body_bytes)
        if raw is None:
            rule = f"request body is larger than {self.settings.max_body_bytes} bytes"
            await _reply(send, 413, route.error_body(413, rule), [(b"connection", b"close")])
            self.requests[(route.path, 413, "")] += 1
            return
        token = feature = tags_header = None
        forward_headers: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name in _DROP_REQUEST:
                if name == b"authorization":
                    text = value.decode("latin-1")
                    if text[:7].lower() == "bearer ":
                        token = text[7:].strip()
                elif name == b"x-api-key":
                    token = value.decode("latin-1")
                elif name == b"x-allotment-feature":
                    feature = value.decode("latin-1")
                elif name == b"x-allotment-tags":
                    tags_header = value.decode("latin-1")
                continue
            forward_headers.append((name.decode("latin-1"), value.decode("latin-1")))

        key = self.keys.lookup(token) if token else None
        if key is None:
            msg = "unknown virtual key" if token else "missing virtual key (Bearer or x-api-key)"
            await _reply(send, 401, route.error_body(401, msg))
            self.requests[(route.path, 401, "")] += 1
            return
        try:
            body = route.validate(orjson.loads(raw))
            meta_feature, meta_tags, changed = route.take_metadata(body)
            tags = parse_tags(tags_header, "x-allotment-tags") if tags_header else ()
            if meta_tags or key.tags:
                tags = merge_tags(key.tags, tags, meta_tags)
            if feature is not None:
                check_name(feature, "x-allotment-feature")
        except orjson.JSONDecodeError as exc:
            await _reply(send, 400, route.error_body(400, f"(body): is not valid JSON: {exc}"))
            self.requests[(route.path, 400, "")] += 1
            return
        except BadClientRequest as exc:
            await _reply(send, 400, route.error_body(400, str(exc)))
            self.requests[(route.path, 400, "")] += 1
            return
        feature = feature or meta_feature or key.feature
        model: str | None = body.get("model")

        cache = self.cache
        if not cache.caught_up and not self.settings.fail_open:
            msg = "the proxy has not caught up on budget policies yet; retry shortly"
            await _reply(send, 503, route.error_body(503, msg), [(b"retry-after", b"1")])
            self.requests[(route.path, 503, "")] += 1
            return
        estimate_in = len(raw) // 4
        estimate_out = route.output_estimate(body, self.settings.default_output_estimate)
        matched = cache.matched(key, feature, tags, model, route.provider)
        verdict = cache.decide(matched, estimate_in, estimate_out, int(started * 1000))
        headers = _policy_headers(verdict, caught_up=cache.caught_up)
        request_id = f"{self._boot}-{next(self._ids)}"
        occurred = datetime.fromtimestamp(started, UTC)

        if verdict.policy == "hard_stop":
            now = datetime.now(UTC)
            seconds = retry_after(verdict, now)
            if seconds is not None:
                headers.append((b"retry-after", str(seconds).encode()))
            # The refusal lasts until the budget resets: the official SDKs retry a 429 (the
            # Anthropic one sleeps the whole Retry-After) unless told not to.
            headers.append((b"x-should-retry", b"false"))
            await _reply(send, 429, route.error_body(429, refusal_message(verdict, now)), headers)
            self.requests[(route.path, 429, "hard_stop")] += 1
            self._record(
                request_id, occurred, key, feature, tags, route, model, None, Tokens(), "blocked"
            )
            return

        routed_to = None
        if verdict.policy == "degrade_route":
            routed_to = verdict.target_model(model)
            decision = verdict.winner.decision if verdict.winner else None
            if routed_to and routed_to != model:
                body["model"] = routed_to
                headers.append((b"x-allotment-routed", f"{model} -> {routed_to}".encode()))
                changed = True
            else:
                routed_to = None
            if decision is not None and decision.concise_prompt:
                route.apply_concise(body, self.settings.concise_prompt)
                changed = True
            if decision is not None and decision.cache_ttl_seconds:
                route.apply_cache_ttl(body, decision.cache_ttl_seconds)
                changed = True
        strip_usage = False
        if body.get("stream"):
            strip_usage = route.prepare_stream(body)
            changed = changed or strip_usage
        payload = orjson.dumps(body) if changed else raw
        auth = self.upstream_auth.get(route.provider)
        if auth is not None:
            forward_headers.append(auth)

        try:
            outcome = await forward(
                self.session,
                self.upstream_urls[route.path],
                payload,
                forward_headers,
                route,
                headers,
                strip_usage,
                estimate_in,
                receive,
                send,
            )
        except BaseException:
            cache.settle(verdict, 0, 0, int(started * 1000))  # never leak a reservation
            raise
        self.requests[(route.path, outcome.status, verdict.policy)] += 1
        tokens = outcome.tokens
        if tokens is None:
            cache.settle(verdict, 0, 0, int(started * 1000))
            outcome.raise_if_interrupted()
            return
        cache.settle(verdict, tokens.input_total, tokens.output, int(started * 1000))
        self._record(
            request_id,
            occurred,
            key,
            feature,
            tags,
            route,
            model,
            outcome.response_model,
            tokens,
            "degraded" if routed_to else "forwarded",
            outcome.usage_status,
            model if routed_to else None,
            routed_to,
        )
        outcome.raise_if_interrupted()

    def _record(
        self,
        request_id: str,
        occurred: datetime,
        key: VirtualKey,
        feature: str | None,
        tags: tuple[str, ...],
        route: Route,
        model: str | None,
        response_model: str | None,
        tokens: Tokens,
        decision: str,
        status: str = "reported",
        routed_from: str | None = None,
        routed_to: str | None = None,
    ) -> None:
        self.emitter.record(
            UsageRecord(
                request_id,
                occurred,
                key.tenant,
                key.team,
                feature,
                key.user,
                key.key_id,
                tags,
                route.provider,
                route.path,
                model,
                response_model,
                tokens,
                status,
                decision,
                routed_from,
                routed_to,
            )
        )


def _policy_headers(verdict: Verdict, caught_up: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-allotment-policy", verdict.policy.encode())]
    if not caught_up:
        headers.append((b"x-allotment-policy-state", b"catching-up"))
    tight = verdict.tightest
    if tight is not None:
        headers.append((b"x-allotment-budget", tight.budget_id.encode()))
        headers.append(
            (b"x-allotment-budget-remaining-tokens", str(max(0, verdict.remaining)).encode())
        )
        if tight.reset_iso:
            headers.append((b"x-allotment-budget-reset", tight.reset_iso.encode()))
    return headers


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` bytes."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


async def _reply(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
