"""Generic webhooks signed per the Standard Webhooks scheme.

`webhook-id` is the alert's stable delivery id, the same on every retry, so a receiver that
follows the scheme drops a duplicate; `webhook-timestamp` is the time of this attempt and
`webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), where the
key is the base64 part of the `whsec_` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson

from services.alerts.channels import Delivery, post_json, receipt
from services.alerts.config import WebhookChannel


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def message_id(delivery_id: str) -> str:
    return f"msg_{delivery_id}"


def body(delivery: Delivery) -> bytes:
    envelope: dict[str, Any] = {
        "type": f"budget.{delivery.kind}",
        "timestamp": delivery.payload["occurred_at"],
        "data": delivery.payload,
    }
    return orjson.dumps(envelope)


def headers(secret: str, msg_id: str, timestamp: int, content: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, content),
    }


async def send(client: httpx.AsyncClient, channel: WebhookChannel, delivery: Delivery) -> str:
    content = body(delivery)
    msg_id = message_id(delivery.delivery_id)
    signed = headers(channel.secret, msg_id, int(time.time()), content)
    return receipt(await post_json(client, channel.name, channel.url, content, signed))
