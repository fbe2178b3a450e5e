"""Local stand-ins for what alerts talk to: Slack, PagerDuty, Standard Webhooks receivers, an
OTLP/HTTP collector (one aiohttp server) and an SMTP server (aiosmtpd), all on 127.0.0.1.

Each checks the wire format the real service would check (a webhook's signature, PagerDuty's
required fields, Slack's blocks, OTLP protobuf) and records what it got. A request is recorded
when it arrives, before it is answered, as a real receiver would act on it. The HTTP server can
be "down" (answer 503, or refuse/abort connections) and can hold requests unanswered, to
play a slow receiver while a worker is killed.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from fakes.net import free_port

PD_SEVERITIES = {"critical", "error", "warning", "info"}
SIGNATURE_TOLERANCE_S = 300


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> str | None:
    """None when the signature is valid and fresh, else what is wrong (Standard Webhooks)."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if abs(time.time() - int(stamp)) > SIGNATURE_TOLERANCE_S:
        return "timestamp outside tolerance"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return None
    return "no matching v1 signature"


@dataclass
class Incident:
    """A PagerDuty incident as the Events API v2 keeps it: one per open dedup_key."""

    dedup_key: str
    status: str = "triggered"
    triggers: int = 0
    resolves: int = 0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    problem: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Faults:
    down: str | None = None  # "503", "400" or "refuse"
    hold: set[str] = field(default_factory=set)


class FakeReceivers:
    """Slack (`/slack`), PagerDuty (`/pagerduty`), webhooks (`/webhook`) and OTLP (`/v1/...`)."""

    def __init__(self, webhook_secret: str, routing_key: str = "test-routing-key") -> None:
        self.webhook_secret = webhook_secret
        self.routing_key = routing_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Received] = []
        self.incidents: dict[str, Incident] = {}
        self.webhooks_processed: dict[str, Any] = {}
        self.otlp_logs: list[dict[str, Any]] = []
        self.otlp_metrics: list[dict[str, Any]] = []
        self._faults = _Faults()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._release = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeReceivers:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._release.set)
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/slack", self._slack)
        app.router.add_post("/pagerduty", self._pagerduty)
        app.router.add_post("/webhook", self._webhook)
        app.router.add_post("/v1/logs", self._otlp_logs)
        app.router.add_post("/v1/metrics", self._otlp_metrics)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self._open()

    async def _open(self) -> None:
        if self._runner is None:
            raise RuntimeError("start the receivers first")
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ faults
    def down(self, mode: str = "503") -> None:
        """Be unavailable: answer 503, or ("refuse") stop listening and drop connections, or
        ("400") reject every request as a receiver with a permanent problem would."""
        self._faults.down = mode
        if mode == "refuse" and self._site is not None:
            self._call(self._site.stop())

    def up(self) -> None:
        if self._faults.down == "refuse":
            self._call(self._open())
        self._faults.down = None

    def hold(self, *paths: str) -> None:
        """Record requests to `paths` but do not answer them until `release()`."""
        self._loop.call_soon_threadsafe(self._release.clear)
        self._faults.hold = set(paths)

    def release(self) -> None:
        self._faults.hold = set()
        self._loop.call_soon_threadsafe(self._release.set)

    # ------------------------------------------------------------------ queries
    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True

    def received(self, path: str, accepted_only: bool = False) -> list[Received]:
        with self._changed:
            return [
                r
                for r in self.requests
                if r.path == path and (not accepted_only or 200 <= r.status < 300)
            ]

    def log_records(self) -> list[dict[str, Any]]:
        """Every OTLP log record received, with its attributes flattened to a dict."""
        records = []
        with self._changed:
            requests = list(self.otlp_logs)
        for request in requests:
            for resource_logs in request.get("resourceLogs", []):
                for scope in resource_logs.get("scopeLogs", []):
                    for record in scope.get("logRecords", []):
                        attrs = {
                            a["key"]: _any_value(a["value"]) for a in record.get("attributes", [])
                        }
                        records.append({**record, "attrs": attrs})
        return records

    def metric_points(self, name: str) -> list[dict[str, Any]]:
        points = []
        with self._changed:
            requests = list(self.otlp_metrics)
        for request in requests:
            for resource_metrics in request.get("resourceMetrics", []):
                for scope in resource_metrics.get("scopeMetrics", []):
                    for metric in scope.get("metrics", []):
                        if metric.get("name") != name:
                            continue
                        data = metric.get("gauge") or metric.get("sum") or {}
                        for point in data.get("dataPoints", []):
                            attrs = {
                                a["key"]: _any_value(a["value"])
                                for a in point.get("attributes", [])
                            }
                            value = point.get("asInt", point.get("asDouble"))
                            points.append({"attrs": attrs, "value": float(value)})
        return points

    # ------------------------------------------------------------------ handlers
    async def _receive(self, request: web.Request) -> tuple[Received, web.StreamResponse | None]:
        body = await request.read()
        got = Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        self._record(got)
        if self._faults.down == "refuse":
            if request.transport is not None:
                request.transport.close()
            got.status = -1
            return got, web.Response(status=503)
        if self._faults.down == "503":
            return got, self._answer(got, web.Response(status=503, text="down"))
        if self._faults.down == "400":
            return got, self._answer(got, web.Response(status=400, text="invalid_payload"))
        if request.path in self._faults.hold:
            await self._release.wait()
        return got, None

    def _record(self, got: Received) -> None:
        with self._changed:
            self.requests.append(got)
            self._changed.notify_all()

    def _answer(
        self, got: Received, response: web.Response, problem: str | None = None
    ) -> web.Response:
        with self._changed:
            got.status = response.status
            got.problem = problem
            self._changed.notify_all()
        return response

    async def _slack(self, request: web.Request) -> web.StreamResponse:
        got, early = await self._receive(request)
        if early is not None:
            return early
        try:
            body = got.json()
        except ValueError:
            return self._answer(got, web.Response(status=400, text="invalid_payload"), "not JSON")
        blocks = body.get("blocks")
        if not body.get("text") and not blocks:
            return self._answer(got, web.Response(status=400, text="no_text"), "no text")
        if blocks is not None and not all(isinstance(b, dict) and "type" in b for b in blocks):
            return self._answer(got, web.Response(status=400, text="invalid_blocks"), "blocks")
        return self._answer(got, web.Response(text="ok"))

    async def _pagerduty(self, request: web.Request) -> web.StreamResponse:
        got, early = await self._receive(request)
        if early is not None:
            return early
        problem = _pagerduty_problem(got, self.routing_key)
        if problem is not None:
            reply = {"status": "invalid event", "message": problem}
            return self._answer(got, web.json_response(reply, status=400), problem)
        body = got.json()
        key = body["dedup_key"]
        with self._changed:
            incident = self.incidents.get(key)
            if body["event_action"] == "trigger":
                if incident is None or incident.status == "resolved":
                    incident = self.incidents[key] = Incident(key)
                incident.triggers += 1
            elif incident is not None and body["event_action"] == "resolve":
                incident.status = "resolved"
                incident.resolves += 1
        reply = {"status": "success", "message": "Event processed", "dedup_key": key}
        return self._answer(got, web.json_response(reply, status=202))

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        got, early = await self._receive(request)
        if early is not None:
            return early
        problem = verify_standard_webhook(self.webhook_secret, got.headers, got.body)
        if problem is not None:
            return self._answer(got, web.Response(status=401, text=problem), problem)
        with self._changed:  # a conforming receiver processes each webhook-id once
            self.webhooks_processed.setdefault(got.headers["webhook-id"], got.json())
        return self._answer(got, web.Response(status=204))

    async def _otlp_logs(self, request: web.Request) -> web.StreamResponse:
        return await self._otlp(request, ExportLogsServiceRequest, self.otlp_logs)

    async def _otlp_metrics(self, request: web.Request) -> web.StreamResponse:
        return await self._otlp(request, ExportMetricsServiceRequest, self.otlp_metrics)

    async def _otlp(
        self, request: web.Request, kind: Any, sink: list[dict[str, Any]]
    ) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if request.headers.get("content-type") != "application/x-protobuf":
            return web.Response(status=415)
        message = kind()
        message.ParseFromString(body)
        with self._changed:
            sink.append(MessageToDict(message))
            self._changed.notify_all()
        return web.Response(body=kind().SerializeToString(), content_type="application/x-protobuf")


def _pagerduty_problem(got: Received, routing_key: str) -> str | None:
    try:
        body = got.json()
    except ValueError:
        return "body is not JSON"
    if body.get("routing_key") != routing_key:
        return "routing_key does not match the integration"
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        return "event_action must be trigger, acknowledge or resolve"
    if not body.get("dedup_key"):
        return "dedup_key is required here (Allotment always sends one)"
    if body["event_action"] == "trigger":
        payload = body.get("payload") or {}
        for name in ("summary", "source", "severity"):
            if not payload.get(name):
                return f"payload.{name} is required"
        if payload["severity"] not in PD_SEVERITIES:
            return "payload.severity must be critical, error, warning or info"
        if len(payload["summary"]) > 1024:
            return "payload.summary is longer than 1024 characters"
    return None


def _any_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return value


class _MailSink:
    def __init__(self, store: list[Message], changed: threading.Condition) -> None:
        self.store = store
        self.changed = changed

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content)
        with self.changed:
            self.store.append(message)
            self.changed.notify_all()
        return "250 Message accepted for delivery"


class FakeSmtp:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self._changed = threading.Condition()
        self._running = False
        self._controller: Controller | None = None

    def __enter__(self) -> FakeSmtp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._running:
            self.stop()

    def start(self) -> None:
        """Listen (again) on the same port."""
        self._controller = Controller(
            _MailSink(self.messages, self._changed), hostname="127.0.0.1", port=self.port
        )
        self._controller.start()
        self._running = True

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._controller is not None:
            self._controller.stop()
        self._running = False

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True
