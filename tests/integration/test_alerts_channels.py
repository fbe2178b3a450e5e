"""Every channel gets its wire format from real topics through the real outbox, once."""

from __future__ import annotations

import uuid
from pathlib import Path

from fakes import alert_events as ev
from fakes.alerts_harness import SECRET, produce, service, settings, until, write_config
from fakes.receivers import FakeReceivers, FakeSmtp
from sqlalchemy import create_engine, text

from schemas.topics import BUDGETS, FORECASTS, POLICIES, THRESHOLDS


def outbox_states(database_url: str, prefix: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT state, count(*) FROM alert_outbox WHERE source = :s GROUP BY state"),
                {"s": prefix},
            )
            return {state: n for state, n in rows}
    finally:
        engine.dispose()


async def test_slack_webhook_and_email_receive_their_formats_and_a_replay_sends_nothing(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    org, team, leaf = f"{tenant}-org", f"{tenant}-support", f"{tenant}-copilot"
    events = [
        (BUDGETS, ev.budget(tenant, org)),
        (BUDGETS, ev.budget(tenant, team, parent=org)),
        (BUDGETS, ev.budget(tenant, leaf, parent=team)),
        (THRESHOLDS, ev.crossed(tenant, leaf, 90)),
    ]
    with FakeReceivers(SECRET) as rx, FakeSmtp() as smtp:
        path = write_config(
            tmp_path / "alerts.yaml", tenant, rx.url, smtp.port, ("slack", "pd", "hook", "mail")
        )
        alerts = settings(kafka_bootstrap, database_url, topic_prefix, path)
        await produce(kafka_bootstrap, topic_prefix, events)
        async with service(alerts) as task:
            assert await until(
                lambda: outbox_states(database_url, topic_prefix) == {"delivered": 3}, alive=task
            )

        slack = rx.received("/slack", accepted_only=True)
        assert len(slack) == 1
        blocks = slack[0].json()["blocks"]
        assert blocks[0]["type"] == "header" and "90%" in blocks[0]["text"]["text"]
        fields = " ".join(f["text"] for f in blocks[1]["fields"])
        assert f"{org} > {team} > {leaf}" in fields and "+18.0%" in fields

        hooks = rx.received("/webhook", accepted_only=True)
        assert len(hooks) == 1 and hooks[0].problem is None  # the receiver verified it
        data = hooks[0].json()["data"]
        assert data["budget_path"] == [org, team, leaf]
        assert data["projection"]["band95"]["high"] > data["projection"]["p50"]
        assert data["link"] == f"http://api.test:8000/v1/tenants/{tenant}/budgets/{leaf}"
        assert hooks[0].headers["webhook-id"] == f"msg_{data['alert_id']}"

        assert smtp.wait_for(lambda: len(smtp.messages) == 1, 10)
        mail = smtp.messages[0]
        assert "90%" in mail["Subject"] and mail["To"] == "finance@example.test"
        assert f"{org} > {team} > {leaf}" in mail.get_payload(decode=True).decode()

        assert rx.received("/pagerduty") == []  # 90 percent does not page

        # Replay everything from offset zero: every dedupe key is taken, nothing is sent.
        engine = create_engine(database_url)
        with engine.begin() as conn:
            conn.execute(
                text("DELETE FROM consumer_offsets WHERE consumer = 'alerts' AND topic LIKE :p"),
                {"p": f"{topic_prefix}.%"},
            )
        before = len(rx.requests), len(smtp.messages)
        async with service(alerts) as task:

            def replayed() -> bool:
                with engine.connect() as conn:
                    n = conn.execute(
                        text(
                            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
                            "WHERE consumer = 'alerts' AND topic LIKE :p"
                        ),
                        {"p": f"{topic_prefix}.%"},
                    ).scalar_one()
                return int(n) == len(events) + 3  # and the 3 outcomes on alert-deliveries

            assert await until(replayed, alive=task)
        engine.dispose()
        assert (len(rx.requests), len(smtp.messages)) == before
        assert outbox_states(database_url, topic_prefix) == {"delivered": 3}


async def test_pagerduty_trigger_and_resolve_pair_up_on_one_dedup_key(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    events = [
        (BUDGETS, ev.budget(tenant, leaf)),
        (THRESHOLDS, ev.crossed(tenant, leaf, 100)),
        (POLICIES, ev.policy(tenant, leaf, "hard_stop")),
        # What the reset timer of streams/ publishes: `allow` in the next period.
        (POLICIES, ev.reset(tenant, leaf, reason="0% of the total limit")),
    ]
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("pd",))
        await produce(kafka_bootstrap, topic_prefix, events)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            assert await until(
                lambda: outbox_states(database_url, topic_prefix) == {"delivered": 3}, alive=task
            ), dump(database_url, topic_prefix)
            # A page for the old period read after its reset would never be resolved: held.
            late = ev.crossed(tenant, leaf, 100, metric="input")
            await produce(kafka_bootstrap, topic_prefix, [(THRESHOLDS, late)])
            expected = {"delivered": 3, "suppressed": 1}
            assert await until(
                lambda: outbox_states(database_url, topic_prefix) == expected, alive=task
            ), dump(database_url, topic_prefix)
        sent = [r.json() for r in rx.received("/pagerduty", accepted_only=True)]
        assert [s["event_action"] for s in sent] == ["trigger", "trigger", "resolve"]
        assert {s["dedup_key"] for s in sent} == {f"{leaf}:2026-10"}
        incident = rx.incidents[f"{leaf}:2026-10"]
        assert (incident.status, incident.triggers, incident.resolves) == ("resolved", 2, 1)
        assert len(rx.incidents) == 1
        assert sent[0]["payload"]["custom_details"]["policy"]["name"] in ("allow", "hard_stop")


def dump(database_url: str, prefix: str) -> list[tuple[object, ...]]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, kind, discriminator, period_key, action, state, attempts, last_error"
                " FROM alert_outbox WHERE source = :s ORDER BY id"
            ),
            {"s": prefix},
        )
        result = [tuple(r) for r in rows]
    engine.dispose()
    return result


async def test_projected_overrun_is_announced_with_its_band_and_never_pages(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    events = [(BUDGETS, ev.budget(tenant, leaf)), (FORECASTS, ev.overrun(tenant, leaf))]
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("pd", "hook"))
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            await produce(kafka_bootstrap, topic_prefix, events)
            assert await until(
                lambda: outbox_states(database_url, topic_prefix) == {"delivered": 1}, alive=task
            )
        (hook,) = rx.received("/webhook", accepted_only=True)
        body = hook.json()
        assert body["type"] == "budget.projected_overrun"
        data = body["data"]
        assert data["projection"]["p50"] == 470e6 and data["projected_percent"] == 111.9
        assert data["consumed"] == 248_000_000 and data["severity"] == "warning"
        assert "runs out before the period ends" in data["recommended_action"]
        assert rx.received("/pagerduty") == []
