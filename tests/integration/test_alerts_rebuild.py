"""An outbox rebuilt from the topics sends nothing that `alert-deliveries` records as delivered or
abandoned: the rows land final, with the recorded attempts and times, and only alerts without an
outcome are sent (once). Outcomes another worker publishes later settle the rows they concern.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from fakes import alert_events as ev
from fakes.alerts_harness import (
    OTHER_SECRET,
    SECRET,
    STEADY,
    crossings,
    names,
    outbox,
    outcomes,
    produce,
    query,
    service,
    settings,
    until,
    write_config,
)
from fakes.receivers import FakeReceivers
from sqlalchemy import Engine, text

from schemas.alerts import AlertDelivered
from schemas.codec import encode
from schemas.topics import ALERT_DELIVERIES, BUDGETS, THRESHOLDS
from services.alerts import outbox as outbox_module
from services.alerts import recorded
from services.alerts.outcomes import Final, fold, outcome_event, state_of
from services.alerts.payload import delivery_id
from services.alerts.publisher import OutcomePublisher
from services.alerts.routing import signal_of

VOLATILE = {"id", "created_at", "updated_at", "next_attempt_at"}
"""Outbox columns that say when a row was written or is next due, not what happened to it."""


def _rows(database_url: str, prefix: str) -> dict[str, dict[str, Any]]:
    """delivery_id -> every column of the row that is not `VOLATILE`."""
    sql = "SELECT * FROM alert_outbox WHERE source = :s"
    return {
        r.delivery_id: {k: v for k, v in r._asdict().items() if k not in VOLATILE}
        for r in query(database_url, sql, s=prefix)
    }


def _lose_the_database(engine: Engine, prefix: str) -> None:
    """What a lost alerts database leaves of this deployment: nothing (offsets included)."""
    with engine.begin() as conn:
        for table in ("alert_outbox", "alert_budgets", "alert_outcomes"):
            conn.execute(text(f"DELETE FROM {table} WHERE source = :s"), {"s": prefix})
        conn.execute(
            text("DELETE FROM consumer_offsets WHERE consumer = :c AND topic LIKE :t"),
            {"c": outbox_module.CONSUMER, "t": f"{prefix}.%"},
        )


def _requests(rx: FakeReceivers) -> dict[str, int]:
    return {path: len(rx.received(path)) for path in ("/slack", "/pagerduty", "/webhook")}


async def test_a_rebuilt_outbox_sends_only_what_has_no_outcome_and_equals_the_original(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, engine: Engine, tmp_path: Path
) -> None:
    tenant, leaf = names()
    with FakeReceivers(OTHER_SECRET) as rx:  # the hook's signature is refused: abandoned
        path = write_config(
            tmp_path / "alerts.yaml",
            tenant,
            rx.url,
            channels=("slack", "pd", "hook"),
            lease_seconds=STEADY,
        )
        alerts = settings(kafka_bootstrap, database_url, topic_prefix, path)
        rx.down("503")  # every first attempt fails retryably: the originals need several
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 75, 90, 100)
        async with service(alerts) as task:
            # 75, 90, 100 to Slack and the hook; the 100 also pages
            assert await until(lambda: len(rx.requests) >= 7, alive=task)
            rx.up()

            def settled() -> bool:
                states = [s for _, s, _ in outbox(database_url, topic_prefix)]
                return sorted(states) == ["delivered"] * 4 + ["failed"] * 3

            assert await until(settled, alive=task)
        original = _rows(database_url, topic_prefix)
        assert {r["attempts"] for r in original.values()} != {1}  # retried: attempts carried
        before = _requests(rx)
        # An alert that reaches no outcome before the database is lost.
        await produce(kafka_bootstrap, topic_prefix, [(THRESHOLDS, ev.crossed(tenant, leaf, 50))])
        _lose_the_database(engine, topic_prefix)
        async with service(alerts) as task:

            def rebuilt() -> bool:
                rows = outbox(database_url, topic_prefix)
                return len(rows) == 9 and {s for _, s, _ in rows} <= {"delivered", "failed"}

            assert await until(rebuilt, alive=task)
        after = _requests(rx)
    rows = _rows(database_url, topic_prefix)
    # Nothing the topic records is sent again; the new alert goes once to Slack and the hook.
    assert after == {**before, "/slack": before["/slack"] + 1, "/webhook": before["/webhook"] + 1}
    assert {k: rows[k] for k in original} == original
    new = sorted(
        (r["channel"], r["state"], r["attempts"]) for k, r in rows.items() if k not in original
    )
    assert new == [("hook", "failed", 1), ("slack", "delivered", 1)]
    abandoned = [r for r in original.values() if r["state"] == "failed"]
    assert len(abandoned) == 3 and all("HTTP 401" in r["last_error"] for r in abandoned)
    events = await outcomes(kafka_bootstrap, topic_prefix)
    assert len(events) == 7 + 2  # the rebuild published only the new alert's outcomes
    history = {a: (state_of(e), e.attempts, e.last_attempt_at) for a, e in fold(events).items()}
    assert history == {
        k: (r["state"], r["attempts"], r["last_attempt_at"]) for k, r in rows.items()
    }


async def test_an_outcome_another_worker_publishes_later_settles_a_waiting_row(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant, leaf = names()
    with FakeReceivers(SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml",
            tenant,
            rx.url,
            channels=("slack",),
            lease_seconds=STEADY,
            base_delay_seconds=60.0,  # after a failed attempt the row waits 30 s or more
            max_delay_seconds=120.0,
        )
        rx.down("503")
        await crossings(kafka_bootstrap, topic_prefix, tenant, leaf, 90)
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            waiting = [("slack", "pending", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == waiting, alive=task)
            rx.up()
            (row,) = query(
                database_url, "SELECT * FROM alert_outbox WHERE source = :s", s=topic_prefix
            )
            # Another worker (its own database, the same topics) delivered it on its 2nd try.
            theirs = outcome_event(
                outbox_module.ClaimedRow(
                    **{
                        k: v
                        for k, v in row._asdict().items()
                        if k in outbox_module.ClaimedRow.__dataclass_fields__
                    }
                    | {"attempts": 2}
                ),
                Final(None, "HTTP 200: ok"),
                row.last_attempt_at,
            )
            other = OutcomePublisher(kafka_bootstrap, topic_prefix)
            await other.start()
            try:
                await other.publish(theirs)
            finally:
                await other.stop()
            assert isinstance(theirs, AlertDelivered)

            def settled() -> bool:
                rows = query(
                    database_url,
                    "SELECT state, attempts, delivered_at FROM alert_outbox WHERE source = :s",
                    s=topic_prefix,
                )
                return [tuple(r) for r in rows] == [("delivered", 2, theirs.delivered_at)]

            assert await until(settled, alive=task)
            # A barrier: a later alert is delivered, so the loop ran after the outcome came.
            await produce(
                kafka_bootstrap, topic_prefix, [(THRESHOLDS, ev.crossed(tenant, leaf, 100))]
            )
            both = [("slack", "delivered", 1), ("slack", "delivered", 2)]
            assert await until(
                lambda: sorted(outbox(database_url, topic_prefix)) == both, alive=task
            )
        assert [r.status for r in rx.received("/slack")] == [503, 200]  # never sent again


def _new_row(source: str) -> outbox_module.NewRow:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    return outbox_module.NewRow(
        delivery_id=str(uuid.uuid4()),
        tenant=tenant,
        budget_id=f"{tenant}-copilot",
        period_key="2026-10",
        kind="threshold",
        discriminator="90:total",
        channel="slack",
        channel_type="slack",
        action="notify",
        state="pending",
        payload={},
        event_at=ev.AT,
        period_end=ev.NOV_START,
        next_attempt_at=ev.AT,
        source=source,
        source_type="ThresholdCrossed",
    )


def _claim(engine: Engine, source: str) -> outbox_module.ClaimedRow:
    with engine.begin() as conn:
        (claimed,) = outbox_module.claim_due(conn, source, 10, STEADY)
    return claimed


def _read_back(engine: Engine, source: str, *events: Any) -> int:
    """What the consumer does with outcome events it reads: fold them, settle their rows."""
    with engine.begin() as conn:
        return outbox_module.adopt_outcomes(conn, source, recorded.record(conn, source, events))


def _state(engine: Engine, row_id: int) -> tuple[Any, ...]:
    with engine.connect() as conn:
        row = outbox_module.get(conn, row_id)
    return row["state"], row["attempts"], row["last_attempt_at"], row["delivered_at"]


def test_an_outcome_of_a_round_before_a_resend_never_ends_the_resent_round(engine: Engine) -> None:
    """The consumer lags: it reads the rejection of the first round only after a person resent
    the row. The resent round goes on; its own outcome settles the row, also when rebuilt."""
    source = f"t{uuid.uuid4().hex[:8]}"
    new = _new_row(source)
    with engine.begin() as conn:
        assert outbox_module.enqueue(conn, new)
    first = _claim(engine, source)
    rejected = outcome_event(
        first, Final("rejected", "HTTP 400: invalid_payload"), first.last_attempt_at
    )
    with engine.begin() as conn:  # the delivery loop records its own outcome
        assert outbox_module.mark_failed(conn, first.id, 1, "HTTP 400: invalid_payload")
        assert outbox_module.resend(conn, first.id) == "failed"
    assert _read_back(engine, source, rejected) == 0
    assert _state(engine, first.id) == ("pending", 0, None, None)
    second = _claim(engine, source)
    assert second.last_attempt_at > first.last_attempt_at
    delivered = outcome_event(second, Final(None, "HTTP 200: ok"), second.last_attempt_at)
    assert _read_back(engine, source, delivered) == 1  # read before the loop records it
    settled = ("delivered", 1, second.last_attempt_at, second.last_attempt_at)
    assert _state(engine, first.id) == settled
    with engine.begin() as conn:
        assert not outbox_module.mark_delivered(conn, second.id, 1, second.last_attempt_at)
    assert _read_back(engine, source, rejected, delivered) == 0  # repeats change nothing
    with engine.begin() as conn:  # the database is lost; the rebuild inserts the row again
        conn.execute(text("DELETE FROM alert_outbox WHERE source = :s"), {"s": source})
        assert outbox_module.enqueue(conn, new)
        (rebuilt,) = conn.execute(
            text("SELECT id FROM alert_outbox WHERE source = :s"), {"s": source}
        )
    assert _state(engine, rebuilt.id) == settled
    with engine.begin() as conn:
        assert outbox_module.claim_due(conn, source, 10, STEADY) == []


async def _publish_outcomes(bootstrap: str, prefix: str, events: list[Any]) -> None:
    """`events` on `alert-deliveries`, keyed by budget id, sent together and all acknowledged."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        topic = ALERT_DELIVERIES.name(prefix)
        sent = [await producer.send(topic, encode(e), key=e.budget_id.encode()) for e in events]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_long_delivery_history_is_read_before_any_signal(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    """More outcomes than one batch holds sit before the one that matters: the consumer reads
    them all before the signal, so the alert they record as delivered is not sent."""
    tenant, leaf = names()
    crossing = ev.crossed(tenant, leaf, 90)
    signal = signal_of(crossing)
    assert signal is not None
    done = ev.claimed_row(
        delivery_id=delivery_id(signal, "slack"),
        tenant=tenant,
        budget_id=leaf,
        discriminator=signal.discriminator,
        channel="slack",
        channel_type="slack",
        action="notify",
        attempts=1,
        last_attempt_at=ev.AT + timedelta(seconds=1),
    )
    history = [
        outcome_event(
            replace(done, delivery_id=str(uuid.uuid4()), budget_id=f"{tenant}-b{i}"),
            Final(None, "HTTP 200: ok"),
            done.last_attempt_at,
        )
        for i in range(6000)
    ]
    delivered = outcome_event(done, Final(None, "HTTP 200: ok"), done.last_attempt_at)
    assert isinstance(delivered, AlertDelivered)
    await _publish_outcomes(kafka_bootstrap, topic_prefix, [*history, delivered])
    with FakeReceivers(SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml", tenant, rx.url, channels=("slack",), lease_seconds=STEADY
        )
        await produce(kafka_bootstrap, topic_prefix, [(BUDGETS, ev.budget(tenant, leaf))])
        await produce(kafka_bootstrap, topic_prefix, [(THRESHOLDS, crossing)])
        async with service(settings(kafka_bootstrap, database_url, topic_prefix, path)) as task:
            assert await until(lambda: outbox(database_url, topic_prefix) != [], 60, task)
            # A barrier: a later alert without an outcome is delivered.
            await produce(
                kafka_bootstrap, topic_prefix, [(THRESHOLDS, ev.crossed(tenant, leaf, 100))]
            )
            both = [("slack", "delivered", 1), ("slack", "delivered", 1)]
            assert await until(lambda: outbox(database_url, topic_prefix) == both, 60, task)
        assert len(rx.received("/slack")) == 1
    rows = query(
        database_url,
        "SELECT delivered_at FROM alert_outbox WHERE delivery_id = :d",
        d=done.delivery_id,
    )
    assert [r.delivered_at for r in rows] == [delivered.delivered_at]
