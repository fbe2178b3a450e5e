"""What every channel adapter shares: the delivery handed to it and the HTTP outcome rules.

An adapter raises `DeliveryFailed` when the receiver did not take the alert; `retryable` tells
the delivery loop whether to back off and try again or to mark the row failed for a human.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from services.alerts.config import EmailChannel, PagerDutyChannel, SlackChannel, WebhookChannel
from services.alerts.errors import DeliveryFailed

AnyChannel = SlackChannel | PagerDutyChannel | WebhookChannel | EmailChannel
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Delivery:
    """One outbox row as a channel sees it. `delivery_id` is the same on every attempt."""

    row_id: int
    delivery_id: str
    channel: AnyChannel
    kind: str
    action: str
    budget_id: str
    period_key: str
    payload: dict[str, Any]
    attempt: int


def receipt(response: httpx.Response) -> str:
    """The receiver's reply as the `AlertDelivered` event reports it: status and body start."""
    text = response.text.strip()[:200]
    return f"HTTP {response.status_code}: {text}" if text else f"HTTP {response.status_code}"


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def post_json(
    client: httpx.AsyncClient,
    name: str,
    url: str,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST JSON and turn every way it can go wrong into a classified `DeliveryFailed`."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"content-type": "application/json", **(headers or {})}
    try:
        response = await client.post(url, content=content, headers=all_headers)
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(name, f"timeout: {exc!r}", retryable=True) from None
    except httpx.TransportError as exc:
        raise DeliveryFailed(name, f"transport: {exc!r}", retryable=True) from None
    if response.is_success:
        return response
    reason = f"HTTP {response.status_code}: {response.text[:200]}"
    raise DeliveryFailed(
        name,
        reason,
        retryable=response.status_code in RETRYABLE_STATUS,
        retry_after=retry_after(response),
    )


async def deliver(delivery: Delivery, client: httpx.AsyncClient, timeout: float = 10.0) -> str:
    """Send one delivery through its channel's adapter; returns the receiver's reply once it
    took the alert."""
    from services.alerts import email, pagerduty, slack, webhook

    channel = delivery.channel
    if isinstance(channel, SlackChannel):
        return await slack.send(client, channel, delivery)
    if isinstance(channel, PagerDutyChannel):
        return await pagerduty.send(client, channel, delivery)
    if isinstance(channel, WebhookChannel):
        return await webhook.send(client, channel, delivery)
    return await email.send(channel, delivery, timeout)
