"""HTTP endpoints of the ingest service, and how outcomes map to status codes.

Endpoints (all POST; an ingest key in `Authorization: Bearer <key>` or `X-Allotment-Key`):

    /v1/usage                   native records (alias /v1/ingest/native)
    /v1/ingest/litellm          LiteLLM StandardLoggingPayload (generic API callback)
    /v1/ingest/helicone         Helicone webhook; `Helicone-Signature` checked; the key may be
                                named by `?key_id=` since Helicone cannot send custom headers
    /v1/ingest/portkey          Portkey log export records
    /v1/ingest/bifrost          Bifrost log records
    /v1/ingest/openai           raw OpenAI responses / usage with attribution
    /v1/ingest/anthropic        raw Anthropic responses / usage with attribution
    /v1/traces                  OTLP/HTTP traces, protobuf or JSON

Bodies are a JSON array, one JSON object, or JSON lines. Answers (except OTLP):

    200  every record accepted         {"accepted": n, "rejected": [], "event_ids": [...]}
    207  some records rejected         same body; `rejected` lists {index, field, rule}
    422  every record rejected         same body
    400  the body cannot be read       {"error": ...}   (413 when over 64 MiB; gzip is accepted)
    401  no/unknown key, bad signature {"error": ...}
    503  Kafka did not acknowledge     {"error": ..., "accepted": 0}: resend the whole request

A record whose event is too large for the usage topic even alone (huge `properties`) is
rejected by index once the others are acknowledged: resending it could never succeed.
`event_ids` is aligned with the records (null where rejected). A 2xx is sent only after Kafka
acknowledged every accepted event (acks=all). OTLP answers 200 with an
ExportTraceServiceResponse whose `partial_success` counts and names the rejected spans.
"""

from __future__ import annotations

import hmac
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from services.ingest.batch import MappedBatch, map_in_slices, read_records
from services.ingest.errors import (
    BadPayload,
    BadSignature,
    BodyTooLarge,
    EventsTooLarge,
    PublishUnavailable,
    Unauthorized,
)
from services.ingest.keys import IngestKey, KeyRing
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import UsageSink
from services.ingest.sources import (
    anthropic,
    bifrost,
    helicone,
    litellm,
    native,
    openai,
    otlp,
    portkey,
)
from services.ingest.sources.base import Draft

Mapper = Callable[[Any], Draft | None]
MAX_BODY_BYTES = 64 * 1024 * 1024


class IngestRoutes:
    """The handlers, bound to the key ring, the sink and a clock given by the composition root."""

    def __init__(
        self,
        keys: KeyRing,
        sink: UsageSink,
        metrics: IngestMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.keys = keys
        self.sink = sink
        self.metrics = metrics
        self.clock = clock

    def router(self) -> APIRouter:
        router = APIRouter()
        simple: dict[str, tuple[str, Mapper]] = {
            "/v1/usage": ("native", native.to_draft),
            "/v1/ingest/native": ("native", native.to_draft),
            "/v1/ingest/litellm": ("litellm", litellm.to_draft),
            "/v1/ingest/portkey": ("portkey", portkey.to_draft),
            "/v1/ingest/bifrost": ("bifrost", bifrost.to_draft),
            "/v1/ingest/openai": ("openai", openai.to_draft),
            "/v1/ingest/anthropic": ("anthropic", anthropic.to_draft),
        }
        for path, (source, mapper) in simple.items():
            router.add_api_route(path, self._records_handler(source, mapper), methods=["POST"])
        router.add_api_route("/v1/ingest/helicone", self.helicone, methods=["POST"])
        router.add_api_route("/v1/traces", self.traces, methods=["POST"])
        return router

    def authenticate(self, request: Request) -> IngestKey:
        presented = request.headers.get("x-allotment-key")
        auth = request.headers.get("authorization", "")
        if presented is None and auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
        if not presented:
            raise Unauthorized("an ingest key is required (Authorization: Bearer <key>)")
        key = self.keys.by_secret(presented)
        if key is None:
            raise Unauthorized("the ingest key is not known")
        return key

    def _records_handler(self, source: str, mapper: Mapper) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            try:
                key = self.authenticate(request)
                body = await read_body(request)
                records = read_records(body, request.headers.get("content-type", ""))
            except (Unauthorized, BadPayload) as exc:
                return _error(exc)
            return await self._accept(source, records, mapper, key)

        return handle

    async def helicone(self, request: Request) -> Response:
        try:
            # The signature covers the body as sent, so Helicone's is read uncompressed.
            body = await read_body(request, decompress=False)
            key = self._helicone_key(request)
            _verify_signature(key, body, request.headers.get("helicone-signature"))
            records = read_records(body, request.headers.get("content-type", ""))
        except (Unauthorized, BadSignature, BadPayload) as exc:
            return _error(exc)
        return await self._accept("helicone", records, helicone.to_draft, key)

    def _helicone_key(self, request: Request) -> IngestKey:
        if request.headers.get("authorization") or request.headers.get("x-allotment-key"):
            return self.authenticate(request)
        key_id = request.query_params.get("key_id")
        key = self.keys.by_id(key_id) if key_id else None
        if key is None:
            raise Unauthorized("name the ingest key with ?key_id= or send it as a bearer token")
        return key

    async def _accept(
        self, source: str, records: list[Any], mapper: Mapper, key: IngestKey
    ) -> Response:
        batch = await map_in_slices(records, mapper, key, self.clock())
        try:
            await self._publish(batch)
        except PublishUnavailable as exc:
            self.metrics.unavailable.labels(source).inc()
            return JSONResponse(
                {"error": exc.reason, "accepted": 0}, status_code=503, headers={"Retry-After": "1"}
            )
        self.metrics.record(source, batch)
        return _batch_response(batch)

    async def _publish(self, batch: MappedBatch) -> None:
        try:
            await self.sink.publish(batch.events)
        except EventsTooLarge as exc:
            batch.reject_events(exc.sizes, exc.limit)

    async def traces(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        as_json = "json" in content_type
        try:
            key = self.authenticate(request)
            body = await read_body(request)
            spans = otlp.spans_from_json(body) if as_json else otlp.spans_from_protobuf(body)
        except (Unauthorized, BadPayload) as exc:
            return _error(exc)
        batch = await map_in_slices(spans, otlp.to_draft, key, self.clock())
        try:
            await self._publish(batch)
        except PublishUnavailable as exc:
            self.metrics.unavailable.labels("otel").inc()
            return Response(exc.reason, status_code=503, headers={"Retry-After": "1"})
        self.metrics.record("otel", batch)
        return _otlp_response(batch, spans, as_json)


async def read_body(request: Request, decompress: bool = True) -> bytes:
    """The request body, gunzipped when sent with `Content-Encoding: gzip` (OTLP exporters
    and collectors often compress); bodies over `MAX_BODY_BYTES` are refused (413).

    Read chunk by chunk with a running count, and gunzipped with a bounded inflater: a body
    sent without Content-Length, or a small gzip that expands to gigabytes, is refused as soon
    as it passes the limit, never held whole first.
    """
    limit = MAX_BODY_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdecimal() and len(declared) < 20 and int(declared) > limit:
        raise BodyTooLarge(f"body is larger than {limit} bytes")
    gunzip = (
        _BoundedGunzip(limit)
        if decompress and request.headers.get("content-encoding", "").lower() == "gzip"
        else None
    )
    body = bytearray()
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(f"body is larger than {limit} bytes")
        if gunzip is None:
            body += chunk
        else:
            gunzip.feed(chunk)
    return gunzip.finish() if gunzip is not None else bytes(body)


class _BoundedGunzip:
    """Gunzip (one or more members, like `gzip.decompress`) into at most `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.out = bytearray()
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.fed = False

    def feed(self, data: bytes) -> None:
        try:
            while data:
                if self.inflater.eof:  # a further gzip member follows the last one
                    self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.fed = True
                room = self.limit + 1 - len(self.out)
                self.out += self.inflater.decompress(data, room)
                if len(self.out) > self.limit:
                    raise BodyTooLarge(f"body is larger than {self.limit} bytes once gunzipped")
                data = self.inflater.unused_data if self.inflater.eof else b""
        except zlib.error as exc:
            raise BadPayload(f"Content-Encoding gzip: body does not decompress ({exc})") from None

    def finish(self) -> bytes:
        if self.fed and not self.inflater.eof:
            raise BadPayload("Content-Encoding gzip: body does not decompress (truncated)")
        return bytes(self.out)


def _verify_signature(key: IngestKey, body: bytes, signature: str | None) -> None:
    if not key.helicone_secret:
        raise BadSignature("Helicone-Signature", f"key {key.key_id!r} has no helicone secret")
    if not signature:
        raise BadSignature("Helicone-Signature", "is required (hex HMAC-SHA256 of the body)")
    expected = hmac.new(key.helicone_secret.encode(), body, sha256).hexdigest().encode()
    # As bytes: compare_digest refuses a str with non-ASCII characters (a header may carry any).
    presented = signature.strip().lower().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected, presented):
        raise BadSignature("Helicone-Signature", "does not match the body")


def _error(exc: Unauthorized | BadSignature | BadPayload) -> JSONResponse:
    if isinstance(exc, BodyTooLarge):
        status = 413
    elif isinstance(exc, BadPayload):
        status = 400
    else:
        status = 401
    return JSONResponse({"error": str(exc)}, status_code=status)


def _batch_response(batch: MappedBatch) -> Response:
    if not batch.rejected:
        status = 200
    elif batch.events:
        status = 207
    else:
        status = 422
    content = {
        "accepted": len(batch.events),
        "rejected": [r.to_dict() for r in batch.rejected],
        "event_ids": batch.event_ids(),
    }
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def _otlp_response(batch: MappedBatch, spans: list[dict[str, Any]], as_json: bool) -> Response:
    message = "; ".join(f"{spans[r.index]['path']}: {r.field}: {r.rule}" for r in batch.rejected)
    if as_json:
        content: dict[str, Any] = {}
        if batch.rejected:
            content["partialSuccess"] = {
                "rejectedSpans": str(len(batch.rejected)),
                "errorMessage": message,
            }
        return Response(orjson.dumps(content), media_type="application/json")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = len(batch.rejected)
        response.partial_success.error_message = message
    return Response(response.SerializeToString(), media_type="application/x-protobuf")
