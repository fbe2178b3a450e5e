"""Slack incoming webhooks: a message with Block Kit blocks and a plain-text fallback.

Slack's incoming webhooks take no idempotency key, so a retry after an unknown outcome can
post the same message twice; each message shows its alert id so a reader can tell.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.alerts.channels import Delivery, post_json, receipt
from services.alerts.config import SlackChannel

_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def _tokens(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def render(payload: dict[str, Any]) -> dict[str, Any]:
    """The incoming-webhook body: `text` for notifications, `blocks` for the message."""
    p = payload
    projection = p.get("projection")
    if projection:
        b80, b95 = projection["band80"], projection["band95"]
        projected = (
            f"{_tokens(projection['p50'])} (80%: {_tokens(b80['low'])}-{_tokens(b80['high'])}, "
            f"95%: {_tokens(b95['low'])}-{_tokens(b95['high'])})"
        )
    else:
        projected = "n/a"
    trend = p.get("trend_vs_prev_7d")
    trend_text = "n/a" if trend is None else f"{trend:+.1%}"
    percent = p.get("percent_used")
    fields = [
        ("Tenant", p["tenant"]),
        ("Budget", " > ".join(p["budget_path"])),
        ("Consumed", f"{_tokens(p['consumed'])} ({percent if percent is not None else 'n/a'}%)"),
        ("Limit / effective", f"{_tokens(p['limit'])} / {_tokens(p['effective_limit'])}"),
        ("Projected period end", projected),
        ("Trend vs previous 7 days", trend_text),
        ("Policy in force", p["policy"]["name"]),
        ("Threshold", "n/a" if p.get("threshold") is None else f"{p['threshold']}%"),
    ]
    action = p["recommended_action"]
    title = f"{_EMOJI.get(p['severity'], '')} {p['title']}".strip()
    return {
        "text": title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Recommended action*\n{action}"},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open budget"},
                        "url": p["link"],
                    }
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"period {p['period_key']} · alert {p['alert_id']}",
                    }
                ],
            },
        ],
    }


async def send(client: httpx.AsyncClient, channel: SlackChannel, delivery: Delivery) -> str:
    response = await post_json(client, channel.name, channel.url, render(delivery.payload))
    return receipt(response)
