"""Email over SMTP: a plain-text alert with a stable Message-ID per alert.

smtplib is blocking, so a send runs in a worker thread. A 4xx SMTP reply or a broken
connection is retried; a 5xx reply (unknown recipient, rejected sender) needs a human.
"""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from services.alerts.channels import Delivery
from services.alerts.config import EmailChannel
from services.alerts.errors import DeliveryFailed


def _line(label: str, value: Any) -> str:
    return f"{label:<26}{'n/a' if value is None else value}"


def render(channel: EmailChannel, delivery: Delivery) -> EmailMessage:
    p = delivery.payload
    projection = p.get("projection")
    projected = "n/a"
    if projection:
        b80, b95 = projection["band80"], projection["band95"]
        projected = (
            f"{projection['p50']:,.0f} (80%: {b80['low']:,.0f}-{b80['high']:,.0f}; "
            f"95%: {b95['low']:,.0f}-{b95['high']:,.0f})"
        )
    trend = p.get("trend_vs_prev_7d")
    lines = [
        p["title"],
        "",
        _line("Tenant:", p["tenant"]),
        _line("Budget path:", " > ".join(p["budget_path"])),
        _line("Period:", p["period_key"]),
        _line("Threshold:", None if p.get("threshold") is None else f"{p['threshold']}%"),
        _line("Consumed:", p["consumed"]),
        _line("Limit:", p["limit"]),
        _line("Effective limit:", p["effective_limit"]),
        _line("Projected period end:", projected),
        _line("Trend vs prev. 7 days:", None if trend is None else f"{trend:+.1%}"),
        _line("Policy in force:", p["policy"]["name"]),
        "",
        "Recommended action: " + p["recommended_action"],
        "",
        p["link"],
        f"alert {p['alert_id']}",
    ]
    message = EmailMessage()
    message["Subject"] = f"[Allotment] {p['title']}"
    message["From"] = channel.sender
    message["To"] = ", ".join(channel.recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{delivery.delivery_id}@allotment>"
    message["X-Allotment-Alert-Id"] = delivery.delivery_id
    message.set_content("\n".join(lines))
    return message


def _send_blocking(channel: EmailChannel, message: EmailMessage, timeout: float) -> str:
    with smtplib.SMTP(channel.host, channel.port, timeout=timeout) as smtp:
        if channel.starttls:
            smtp.starttls()
        if channel.username and channel.password:
            smtp.login(channel.username, channel.password)
        refused = smtp.send_message(message)
    taken = len(channel.recipients) - len(refused)
    return f"SMTP {channel.host}:{channel.port} accepted it for {taken} recipient(s)"


async def send(channel: EmailChannel, delivery: Delivery, timeout: float = 10.0) -> str:
    message = render(channel, delivery)
    try:
        return await asyncio.to_thread(_send_blocking, channel, message, timeout)
    except smtplib.SMTPResponseException as exc:
        reason = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
        raise DeliveryFailed(channel.name, reason, retryable=exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        retry = all(code < 500 for code in codes)
        reason = f"recipients refused: {codes}"
        raise DeliveryFailed(channel.name, reason, retryable=retry) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(channel.name, f"smtp: {exc!r}", retryable=True) from None
