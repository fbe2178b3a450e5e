"""PagerDuty Events API v2: trigger on 100 percent or a hard stop, resolve at the period reset.

`dedup_key` is the budget and the period, so every page of one budget in one period (the 100
percent crossing, the hard stop, a retry after a crash) lands on one incident, and the reset's
resolve closes exactly that incident.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from services.alerts.channels import Delivery, post_json, receipt
from services.alerts.config import PagerDutyChannel

MAX_DEDUP_KEY = 255


def dedup_key(budget_id: str, period_key: str) -> str:
    """`{budget_id}:{period_key}`; past PagerDuty's 255 characters, a digest keeps it unique."""
    key = f"{budget_id}:{period_key}"
    if len(key) <= MAX_DEDUP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: MAX_DEDUP_KEY - len(digest) - 1]}~{digest}"


def render(routing_key: str, delivery: Delivery) -> dict[str, Any]:
    key = dedup_key(delivery.budget_id, delivery.period_key)
    if delivery.action == "resolve":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    p = delivery.payload
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "client": "Allotment",
        "client_url": p["link"],
        "links": [{"href": p["link"], "text": f"Budget {p['budget_id']}"}],
        "payload": {
            "summary": p["title"][:1024],
            "source": f"allotment/{p['tenant']}",
            "severity": "critical" if p["severity"] == "critical" else "warning",
            "timestamp": p["occurred_at"],
            "component": p["budget_id"],
            "group": p["tenant"],
            "class": p["kind"],
            "custom_details": p,
        },
    }


async def send(client: httpx.AsyncClient, channel: PagerDutyChannel, delivery: Delivery) -> str:
    body = render(channel.routing_key, delivery)
    return receipt(await post_json(client, channel.name, channel.url, body))
