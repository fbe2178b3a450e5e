"""A receiver that is down for a while gets each alert exactly once when it comes back."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fakes import alert_events as ev
from fakes.alerts_harness import (
    SECRET,
    outbox,
    produce,
    service,
    settings,
    until,
    write_config,
)
from fakes.receivers import FakeReceivers, FakeSmtp
from sqlalchemy import create_engine, text

from schemas.topics import BUDGETS, THRESHOLDS


@pytest.mark.parametrize("mode", ["503", "refuse"])
async def test_down_receiver_gets_the_alert_once_when_it_is_back(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path, mode: str
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack", "hook"))
        rx.down(mode)
        await produce(
            kafka_bootstrap,
            topic_prefix,
            [(BUDGETS, ev.budget(tenant, leaf)), (THRESHOLDS, ev.crossed(tenant, leaf, 90))],
        )
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:

            def retried() -> bool:
                found = outbox(database_url, topic_prefix)
                return len(found) == 2 and all(a >= 3 and s != "delivered" for _, s, a in found)

            assert await until(retried, alive=task)  # several failed attempts while down
            assert rx.received("/slack", accepted_only=True) == []
            rx.up()

            def delivered() -> bool:
                return {s for _, s, _ in outbox(database_url, topic_prefix)} == {"delivered"}

            assert await until(delivered, alive=task)
        assert len(rx.received("/slack", accepted_only=True)) == 1
        hooks = rx.received("/webhook", accepted_only=True)
        assert len(hooks) == 1 and len(rx.webhooks_processed) == 1
        if mode == "503":  # the failed attempts did reach the receiver, with the same id
            ids = {r.headers["webhook-id"] for r in rx.received("/webhook")}
            assert len(rx.received("/webhook")) >= 4 and ids == {hooks[0].headers["webhook-id"]}


async def test_a_rejected_alert_fails_at_once_and_resend_delivers_it(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from services.cli import build

    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack",))
        rx.down("400")
        await produce(
            kafka_bootstrap,
            topic_prefix,
            [(BUDGETS, ev.budget(tenant, leaf)), (THRESHOLDS, ev.crossed(tenant, leaf, 75))],
        )
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            assert await until(
                lambda: outbox(database_url, topic_prefix) == [("slack", "failed", 1)]
            )
            rx.up()
            engine = create_engine(database_url)
            with engine.connect() as conn:
                row_id = conn.execute(
                    text("SELECT id FROM alert_outbox WHERE source = :s"), {"s": topic_prefix}
                ).scalar_one()
            engine.dispose()
            env = {"ALLOTMENT_DATABASE_URL": database_url}
            runner = CliRunner()
            result = runner.invoke(build(), ["alerts", "resend", str(row_id)], env=env)
            assert result.exit_code == 0 and "failed -> pending" in result.output
            delivered = [("slack", "delivered", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == delivered, alive=task)
            again = runner.invoke(build(), ["alerts", "resend", str(row_id)], env=env)
            assert again.exit_code == 1 and "--force" in again.output
        assert len(rx.received("/slack", accepted_only=True)) == 1


async def test_smtp_server_down_then_back_gets_the_mail_once(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    with FakeReceivers(SECRET) as rx, FakeSmtp() as smtp:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, smtp.port, ("mail",))
        smtp.stop()
        await produce(
            kafka_bootstrap,
            topic_prefix,
            [(BUDGETS, ev.budget(tenant, leaf)), (THRESHOLDS, ev.crossed(tenant, leaf, 90))],
        )
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:

            def retried() -> bool:
                found = outbox(database_url, topic_prefix)
                return len(found) == 1 and found[0][1] != "delivered" and found[0][2] >= 3

            assert await until(retried, alive=task)
            smtp.start()
            delivered = [("mail", "delivered")]
            assert await until(
                lambda: [(c, s) for c, s, _ in outbox(database_url, topic_prefix)] == delivered,
                alive=task,
            )
        assert len(smtp.messages) == 1
        assert "90%" in smtp.messages[0]["Subject"]
