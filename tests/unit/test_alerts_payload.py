"""The alert payload and what each channel makes of it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from typing import Any

import orjson
from fakes import alert_events as ev

from schemas.base import Event
from services.alerts import email, pagerduty, slack, webhook
from services.alerts.channels import Delivery
from services.alerts.config import DeliveryTuning, EmailChannel
from services.alerts.delivery import backoff_delay
from services.alerts.payload import (
    BudgetView,
    budget_link,
    budget_path,
    build_payload,
    delivery_id,
    update_view,
    with_id,
)
from services.alerts.routing import signal_of

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def payload_for(event: Event, view: BudgetView | None = None) -> dict[str, Any]:
    signal = signal_of(event)
    assert signal is not None
    folded = update_view(view or BudgetView(name="Support copilot"), event)
    path = ["org", "support", "copilot"]
    built = build_payload(event, signal, path, folded, "http://api:8000/")
    return with_id(built, delivery_id(signal, "slack"))


def delivery(payload: dict[str, Any], action: str = "notify") -> Delivery:
    return Delivery(
        row_id=1,
        delivery_id=str(payload["alert_id"]),
        channel=EmailChannel(name="m", host="h", sender="a@b.c", recipients=["x@y.z"]),
        kind=str(payload["kind"]),
        action=action,
        budget_id="copilot",
        period_key="2026-10",
        payload=payload,
        attempt=1,
    )


def test_threshold_payload_carries_everything_the_issue_asks_for() -> None:
    p = payload_for(ev.crossed("acme", "copilot", 90, consumed=378_000_000))
    assert p["tenant"] == "acme" and p["budget_path"] == ["org", "support", "copilot"]
    assert p["threshold"] == 90 and p["consumed"] == 378_000_000
    assert p["limit"] == 420_000_000 and p["effective_limit"] == 420_000_000
    projection = p["projection"]
    assert isinstance(projection, dict) and projection["p50"] == 470e6
    assert projection["band80"]["low"] < 470e6 < projection["band95"]["high"]
    assert p["trend_vs_prev_7d"] == 0.18 and p["percent_used"] == 90.0
    assert p["policy"] == {"name": "allow", "reason": ""}
    assert "50M" in str(p["recommended_action"])
    assert p["link"] == "http://api:8000/v1/tenants/acme/budgets/copilot"


def test_policy_alert_takes_projection_from_an_earlier_forecast() -> None:
    view = update_view(BudgetView(), ev.overrun("acme", "copilot"))
    p = payload_for(ev.policy("acme", "copilot", "hard_stop"), view)
    assert p["policy"]["name"] == "hard_stop"
    assert p["projection"] is not None and p["severity"] == "critical"
    assert "429" in str(p["recommended_action"])


def test_budget_path_walks_parents_and_survives_a_cycle() -> None:
    parents = {"c": "b", "b": "a", "a": None}
    assert budget_path("c", parents) == ["a", "b", "c"]
    assert budget_path("x", {"x": "y", "y": "x"}) == ["y", "x"]


def test_delivery_id_is_stable_per_alert_and_channel() -> None:
    s = signal_of(ev.crossed("acme", "copilot", 90))
    t = signal_of(ev.crossed("acme", "copilot", 90, consumed=1))
    assert s is not None and t is not None
    assert delivery_id(s, "slack") == delivery_id(t, "slack") != delivery_id(s, "hook")


def test_slack_message_has_blocks_fields_and_link() -> None:
    p = payload_for(ev.crossed("acme", "copilot", 90))
    body = slack.render(p)
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "actions", "context"]
    fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
    assert "org > support > copilot" in fields and "470,000,000" in fields and "+18.0%" in fields
    assert body["blocks"][3]["elements"][0]["url"] == p["link"]
    assert str(p["alert_id"]) in body["blocks"][4]["elements"][0]["text"]


def test_pagerduty_trigger_and_resolve_share_the_dedup_key() -> None:
    p = payload_for(ev.crossed("acme", "copilot", 100))
    trigger = pagerduty.render("rk", delivery(p, "trigger"))
    resolve = pagerduty.render("rk", delivery(p, "resolve"))
    assert trigger["event_action"] == "trigger" and resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "copilot:2026-10"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["budget_path"] == ["org", "support", "copilot"]


def test_webhook_signature_matches_the_standard_webhooks_reference_vector() -> None:
    body = b'{"test": 2432232314}'
    got = webhook.sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_webhook_headers_sign_exactly_the_body_sent() -> None:
    d = delivery(payload_for(ev.crossed("acme", "copilot", 75)))
    content = webhook.body(d)
    headers = webhook.headers(SECRET, webhook.message_id(d.delivery_id), 1_800_000_000, content)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.1800000000.".encode() + content
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    assert orjson.loads(content)["type"] == "budget.threshold"


def test_email_has_stable_message_id_and_the_numbers() -> None:
    d = delivery(payload_for(ev.crossed("acme", "copilot", 90)))
    assert isinstance(d.channel, EmailChannel)
    message = email.render(d.channel, d)
    assert message["Message-ID"] == f"<{d.delivery_id}@allotment>"
    text = message.get_content()
    assert "org > support > copilot" in text and "470,000,000" in text and "+18.0%" in text


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    tuning = DeliveryTuning(base_delay_seconds=1.0, max_delay_seconds=30.0)
    assert backoff_delay(1, tuning, 0.0) == 0.5 and backoff_delay(1, tuning, 0.999) < 1.0
    assert backoff_delay(4, tuning, 0.0) == 4.0
    assert backoff_delay(20, tuning, 0.999) <= 30.0
    rng = random.Random(7)
    draws = {backoff_delay(3, tuning, rng.random()) for _ in range(20)}
    assert len(draws) > 1 and all(2.0 <= d < 4.0 for d in draws)


def test_link_keeps_slashes_of_a_budget_id_and_escapes_the_rest() -> None:
    assert budget_link("http://api/", "acme", "org/eu team") == (
        "http://api/v1/tenants/acme/budgets/org/eu%20team"
    )


def test_pagerduty_dedup_key_stays_within_255_characters_and_unique() -> None:
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    key_a, key_b = pagerduty.dedup_key(long_a, "p" * 60), pagerduty.dedup_key(long_b, "p" * 60)
    assert len(key_a) == len(key_b) == 255 and key_a != key_b
    assert pagerduty.dedup_key("b", "2026-10") == "b:2026-10"
