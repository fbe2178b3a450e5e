"""Delivery outcomes are facts on `alert-deliveries`: each final outcome appears there before the
outbox records it, an outcome published but not recorded is recorded from the topic, a Kafka
outage holds the row instead of losing the outcome, and folding the topic from offset zero gives
the outbox's delivery history.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fakes import alert_events as ev
from fakes.alerts_harness import (
    OTHER_SECRET,
    SECRET,
    STEADY,
    crossings,
    finished_rows,
    names,
    outbox,
    outcomes,
    service,
    settings,
    until,
    write_config,
)
from fakes.receivers import FakeReceivers
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from schemas.alerts import AlertAbandoned, AlertDelivered, AlertOutcome
from schemas.topics import THRESHOLDS
from services.alerts import outbox as outbox_module
from services.alerts.outcomes import Final, fold, outcome_event, state_of
from services.alerts.publisher import OutcomePublisher
from services.common.kafka import partition_for


def _history(events: list[AlertOutcome]) -> dict[str, tuple[Any, ...]]:
    return {
        alert_id: (state_of(e), e.attempts, e.last_attempt_at, getattr(e, "delivered_at", None))
        for alert_id, e in fold(events).items()
    }


def _outbox_history(database_url: str, prefix: str) -> dict[str, tuple[Any, ...]]:
    return {
        alert_id: (r["state"], r["attempts"], r["last_attempt_at"], r["delivered_at"])
        for alert_id, r in finished_rows(database_url, prefix).items()
    }


async def test_a_delivered_and_a_rejected_alert_each_appear_once_with_their_facts(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, leaf = names()
    with FakeReceivers(OTHER_SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml",
            tenant,
            rx.url,
            channels=("slack", "hook"),
            lease_seconds=STEADY,
        )
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 90)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            done = [("hook", "failed", 1), ("slack", "delivered", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == done, alive=task)
    events = await outcomes(kafka_bootstrap, topic_prefix)
    rows = finished_rows(database_url, topic_prefix)
    assert sorted(type(e).__name__ for e in events) == ["AlertAbandoned", "AlertDelivered"]
    by_channel = {e.channel: e for e in events}
    delivered, abandoned = by_channel["slack"], by_channel["hook"]
    assert isinstance(delivered, AlertDelivered) and isinstance(abandoned, AlertAbandoned)
    for event in events:
        row = rows[event.alert_id]  # the outbox's idempotency key is the event's alert id
        assert (event.tenant, event.budget_id, event.period_key) == (tenant, leaf, "2026-10")
        assert (event.kind, event.discriminator, event.action) == (
            "threshold",
            "90:total",
            "notify",
        )
        assert (
            event.channel_type
            == row["channel_type"]
            == {"slack": "slack", "hook": "webhook"}[event.channel]
        )
        assert event.source.type == "ThresholdCrossed"
        assert event.source.topic == THRESHOLDS.name(topic_prefix)
        assert event.source.partition == partition_for(leaf, THRESHOLDS.partitions)
        assert (event.source.offset, event.source.occurred_at) == (0, ev.AT)
        assert event.attempts == row["attempts"] == 1
        assert event.first_attempt_at == row["first_attempt_at"] == row["last_attempt_at"]
        assert event.last_attempt_at == row["last_attempt_at"]
    assert delivered.delivered_at == rows[delivered.alert_id]["delivered_at"]
    assert delivered.receiver_status == "HTTP 200: ok"
    assert abandoned.reason == "rejected" and "HTTP 401" in abandoned.error
    assert abandoned.error == rows[abandoned.alert_id]["last_error"]


async def test_replaying_the_topic_rebuilds_the_outbox_history_also_after_a_resend(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, leaf = names()
    with FakeReceivers(SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml",
            tenant,
            rx.url,
            channels=("slack", "pd", "hook"),
            lease_seconds=STEADY,
        )
        rx.down("400")  # everything is rejected at first
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 75, 90, 100)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            # 75, 90, 100 to Slack and the hook; the 100 also pages
            assert await until(lambda: len(finished_rows(database_url, topic_prefix)) == 7)
            assert {s for _, s, _ in outbox(database_url, topic_prefix)} == {"failed"}
            rx.up()
            engine = create_engine(database_url)
            try:
                for row in finished_rows(database_url, topic_prefix).values():
                    if row["channel"] != "pd":  # the page stays abandoned
                        with engine.begin() as conn:
                            outbox_module.resend(conn, row["id"])
            finally:
                engine.dispose()

            def settled() -> bool:
                states = sorted(s for _, s, _ in outbox(database_url, topic_prefix))
                return states == ["delivered"] * 6 + ["failed"]

            assert await until(settled, alive=task)
    events = await outcomes(kafka_bootstrap, topic_prefix)
    assert len(events) == 7 + 6  # one outcome per round: rejected, then delivered after resend
    assert _history(events) == _outbox_history(database_url, topic_prefix)
    assert _history(events + events) == _history(events)  # a repeat changes nothing


async def test_an_outcome_published_but_not_recorded_is_recorded_from_the_topic(
    kafka_bootstrap: str,
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL fails right after the outcome was published: as after a crash there, the row
    stays `sending`. The consumer reads the outcome back from `alert-deliveries` and settles
    the row before its lease runs out, so the receiver is not asked again."""
    tenant, leaf = names()
    real_mark = outbox_module.mark_delivered
    failed: list[int] = []

    def mark_once_failing(conn: Any, row_id: int, attempt: int, at: Any) -> bool:
        if not failed:
            failed.append(row_id)
            raise OperationalError("UPDATE alert_outbox", {}, Exception("server closed"))
        return real_mark(conn, row_id, attempt, at)

    monkeypatch.setattr(outbox_module, "mark_delivered", mark_once_failing)
    with FakeReceivers(SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack",), lease_seconds=STEADY
        )
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 90)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            done = [("slack", "delivered", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == done, alive=task)
        assert len(rx.received("/slack")) == 1
    events = await outcomes(kafka_bootstrap, topic_prefix)
    assert len(failed) == 1
    assert [(type(e), e.attempts) for e in events] == [(AlertDelivered, 1)]
    assert _history(events) == _outbox_history(database_url, topic_prefix)


class FlakyPublisher:
    """Kafka "down" for outcomes while `down` is set: each publish then goes to a topic that
    does not exist (auto-creation is off), so the real producer fails as it does when the
    broker does not acknowledge. Otherwise the real publisher writes `alert-deliveries`."""

    instances: list[FlakyPublisher] = []

    def __init__(self, bootstrap: str, prefix: str, timeout_seconds: float) -> None:
        self.real = OutcomePublisher(bootstrap, prefix, timeout_seconds)
        self.dead = OutcomePublisher(bootstrap, f"{prefix}-missing", 0.5)
        self.down = True
        self.refused = 0
        FlakyPublisher.instances.append(self)

    async def start(self) -> None:
        await self.real.start()
        await self.dead.start()

    async def stop(self) -> None:
        await self.real.stop()
        await self.dead.stop()

    async def publish(self, event: AlertOutcome) -> None:
        if self.down:
            try:
                await self.dead.publish(event)
            finally:
                self.refused += 1
        await self.real.publish(event)


async def test_an_outcome_kafka_does_not_take_holds_the_row_until_it_does(
    kafka_bootstrap: str,
    topic_prefix: str,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.alerts import app

    monkeypatch.setattr(FlakyPublisher, "instances", [])
    monkeypatch.setattr(app, "OutcomePublisher", FlakyPublisher)
    tenant, leaf = names()
    with FakeReceivers(SECRET) as rx:
        path = write_config(tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack",))
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 90)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            assert await until(lambda: len(FlakyPublisher.instances) == 1, alive=task)
            flaky = FlakyPublisher.instances[0]
            # The lease is 3 s and tries are at most 1 s apart: 8 refusals span more than a
            # lease, so a row whose lease were not renewed would have been taken over by now.
            assert await until(lambda: flaky.refused >= 8, alive=task)
            assert outbox(database_url, topic_prefix) == [("slack", "sending", 1)]
            assert len(rx.received("/slack")) == 1  # the receiver is not asked again
            assert await outcomes(kafka_bootstrap, topic_prefix) == []
            flaky.down = False
            done = [("slack", "delivered", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == done, alive=task)
        assert len(rx.received("/slack")) == 1
    events = await outcomes(kafka_bootstrap, topic_prefix)
    assert [(type(e), e.attempts) for e in events] == [(AlertDelivered, 1)]
    assert _history(events) == _outbox_history(database_url, topic_prefix)


async def test_the_real_publisher_reports_an_unacknowledged_outcome(kafka_bootstrap: str) -> None:
    from services.alerts.publisher import OutcomeNotPublished

    publisher = OutcomePublisher(kafka_bootstrap, f"t{uuid.uuid4().hex[:8]}-absent", 0.5)
    await publisher.start()
    try:
        with pytest.raises(OutcomeNotPublished) as err:
            await publisher.publish(_an_outcome())
        assert err.value.alert_id == _an_outcome().alert_id
    finally:
        await publisher.stop()


def _an_outcome() -> AlertOutcome:
    return outcome_event(ev.claimed_row(), Final(None, "HTTP 202"), ev.AT)
