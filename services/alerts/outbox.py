"""The PostgreSQL outbox: alerts waiting, being sent, delivered, failed or suppressed.

Every function takes a SQLAlchemy `Connection` inside the caller's transaction. Writes that
come from the topics are idempotent (`ON CONFLICT DO NOTHING` on the dedupe key), and the
delivery loop's state changes are fenced by the attempt number, so a worker whose lease ran
out cannot overwrite what its successor recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text

from services.alerts.errors import NotResendable, OutboxRowNotFound

CONSUMER = "alerts"
STATES = ("pending", "sending", "delivered", "failed", "suppressed")


@dataclass(frozen=True)
class NewRow:
    delivery_id: str
    tenant: str
    budget_id: str
    period_key: str
    kind: str
    discriminator: str
    channel: str
    channel_type: str
    action: str
    state: str
    payload: dict[str, Any]
    event_at: datetime
    period_end: datetime | None
    next_attempt_at: datetime
    source: str
    last_error: str | None = None
    source_type: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


@dataclass(frozen=True)
class ClaimedRow:
    """A row taken for one attempt, with what its outcome event (`schemas.alerts`) reports."""

    id: int
    delivery_id: str
    tenant: str
    budget_id: str
    period_key: str
    kind: str
    discriminator: str
    channel: str
    channel_type: str
    action: str
    payload: dict[str, Any]
    attempts: int
    event_at: datetime
    first_attempt_at: datetime
    last_attempt_at: datetime
    source_type: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


def enqueue(conn: Connection, row: NewRow) -> bool:
    """Insert unless the dedupe key is already there; True when a row was added.

    A row whose alert already has an outcome on `alert-deliveries` (a rebuild from the topics)
    is settled to it at once, in the same transaction: it is never claimed."""
    result = conn.execute(
        text(
            "INSERT INTO alert_outbox (delivery_id, tenant, budget_id, period_key, kind, "
            "discriminator, channel, channel_type, action, state, payload, event_at, period_end, "
            "next_attempt_at, source, last_error, source_type, source_topic, source_partition, "
            "source_offset) VALUES (:delivery_id, :tenant, :budget_id, "
            ":period_key, :kind, :discriminator, :channel, :channel_type, :action, :state, "
            "CAST(:payload AS jsonb), :event_at, :period_end, :next_attempt_at, :source, "
            ":last_error, :source_type, :source_topic, :source_partition, :source_offset) "
            "ON CONFLICT DO NOTHING"
        ),
        {**row.__dict__, "payload": orjson.dumps(row.payload).decode()},
    )
    if result.rowcount != 1:
        return False
    adopt_outcomes(conn, row.source, [row.delivery_id])
    return True


def adopt_outcomes(conn: Connection, source: str, alert_ids: Sequence[str]) -> int:
    """Settle the rows of `alert_ids` to their outcome in `alert_outcomes` (the fold of
    `alert-deliveries`, `services.alerts.recorded`); returns how many rows changed.

    A row that is not final takes the outcome, whoever published it: it is not sent again,
    and a delivery still in flight finds its fence gone. A final row takes only an outcome at
    least as recent as its own (the fold's rule), so the outbox ends as the fold of the topic.
    A resent row ignores the outcomes of the rounds before the resend (`resent_after`).
    """
    if not alert_ids:
        return 0
    result = conn.execute(
        text(
            "UPDATE alert_outbox o SET state = c.state, attempts = c.attempts, "
            "first_attempt_at = c.first_attempt_at, last_attempt_at = c.last_attempt_at, "
            "delivered_at = c.delivered_at, last_error = c.last_error, lease_until = NULL, "
            "updated_at = now() FROM alert_outcomes c WHERE o.source = :s "
            "AND o.delivery_id = ANY(:ids) AND c.source = o.source AND c.alert_id = o.delivery_id "
            "AND c.last_attempt_at > coalesce(o.resent_after, '-infinity') "
            "AND (o.state NOT IN ('delivered', 'failed') "
            "OR c.last_attempt_at >= coalesce(o.last_attempt_at, '-infinity')) "
            "AND (o.state, o.attempts, o.last_attempt_at, o.delivered_at) IS DISTINCT FROM "
            "(c.state, c.attempts, c.last_attempt_at, c.delivered_at)"
        ),
        {"s": source, "ids": list(alert_ids)},
    )
    return result.rowcount


def last_sent(
    conn: Connection, source: str, budget_id: str, channels: Iterable[str]
) -> dict[str, datetime]:
    """Per channel, the event time of this budget's latest alert that was not suppressed."""
    rows = conn.execute(
        text(
            "SELECT channel, max(event_at) AS at FROM alert_outbox WHERE source = :s "
            "AND budget_id = :b AND channel = ANY(:c) AND state <> 'suppressed' GROUP BY channel"
        ),
        {"s": source, "b": budget_id, "c": list(channels)},
    )
    return {r.channel: r.at for r in rows}


def open_pages(
    conn: Connection, source: str, budget_id: str, channel: str, period_key: str, at: datetime
) -> list[tuple[str, Any]]:
    """(period_key, period_end) of this budget's pages on `channel` that a reset should resolve.

    A page belongs to an earlier period when its period differs from the reset's or ended by
    the time of the reset (the pipeline may label a reset with either period).
    """
    rows = conn.execute(
        text(
            "SELECT DISTINCT t.period_key, t.period_end FROM alert_outbox t WHERE t.source = :s "
            "AND t.budget_id = :b AND t.channel = :c AND t.action = 'trigger' "
            "AND (t.period_key <> :p OR t.period_end <= :at) AND NOT EXISTS (SELECT 1 FROM "
            "alert_outbox r WHERE r.source = t.source AND r.budget_id = t.budget_id AND "
            "r.channel = t.channel AND r.period_key = t.period_key AND r.action = 'resolve')"
        ),
        {"s": source, "b": budget_id, "c": channel, "p": period_key, "at": at},
    )
    return [(r.period_key, r.period_end) for r in rows]


def claim_due(conn: Connection, source: str, limit: int, lease_seconds: float) -> list[ClaimedRow]:
    """Take up to `limit` due rows: pending ones whose time has come, and `sending` ones whose
    worker's lease ran out (it died or hung mid-delivery). Each claim counts as one attempt
    and is timed (`first_attempt_at` once per round, `last_attempt_at` every time).

    A resolve waits while a trigger of the same incident is still queued, so a page that was
    held back by an outage can never arrive after its own resolve."""
    rows = conn.execute(
        text(
            "UPDATE alert_outbox o SET state = 'sending', attempts = o.attempts + 1, "
            "lease_until = now() + make_interval(secs => :lease), updated_at = now(), "
            "first_attempt_at = coalesce(o.first_attempt_at, now()), last_attempt_at = now() "
            "WHERE o.id IN (SELECT id FROM alert_outbox WHERE source = :s AND ("
            "(state = 'pending' AND next_attempt_at <= now()) OR "
            "(state = 'sending' AND lease_until < now())) "
            "AND NOT (action = 'resolve' AND EXISTS (SELECT 1 FROM alert_outbox t "
            "WHERE t.source = alert_outbox.source AND t.budget_id = alert_outbox.budget_id "
            "AND t.period_key = alert_outbox.period_key AND t.channel = alert_outbox.channel "
            "AND t.action = 'trigger' AND t.state IN ('pending', 'sending'))) "
            "ORDER BY next_attempt_at, id LIMIT :n FOR UPDATE SKIP LOCKED) "
            "RETURNING o.id, o.delivery_id, o.tenant, o.budget_id, o.period_key, o.kind, "
            "o.discriminator, o.channel, o.channel_type, o.action, o.payload, o.attempts, "
            "o.event_at, o.first_attempt_at, o.last_attempt_at, o.source_type, o.source_topic, "
            "o.source_partition, o.source_offset"
        ),
        {"s": source, "n": limit, "lease": lease_seconds},
    )
    return [ClaimedRow(**r._asdict()) for r in rows]


def renew_lease(conn: Connection, row_id: int, attempt: int, lease_seconds: float) -> bool:
    """Extend the lease of a row still held by `attempt`; False when another worker took it.

    The delivery loop holds a row this way while the broker does not take its outcome event.
    """
    result = conn.execute(
        text(
            "UPDATE alert_outbox SET lease_until = now() + make_interval(secs => :lease), "
            "updated_at = now() WHERE id = :id AND state = 'sending' AND attempts = :attempt"
        ),
        {"id": row_id, "attempt": attempt, "lease": lease_seconds},
    )
    return result.rowcount == 1


def mark_delivered(conn: Connection, row_id: int, attempt: int, at: datetime) -> bool:
    """`at` is the `delivered_at` of the published `AlertDelivered`, so both say the same."""
    return _transition(
        conn,
        row_id,
        attempt,
        "state = 'delivered', delivered_at = :at, last_error = NULL",
        {"at": at},
    )


def mark_retry(conn: Connection, row_id: int, attempt: int, delay: float, error: str) -> bool:
    sets = (
        "state = 'pending', last_error = :err, "
        "next_attempt_at = now() + make_interval(secs => :delay)"
    )
    return _transition(conn, row_id, attempt, sets, {"err": error, "delay": delay})


def mark_failed(conn: Connection, row_id: int, attempt: int, error: str) -> bool:
    return _transition(conn, row_id, attempt, "state = 'failed', last_error = :err", {"err": error})


def _transition(
    conn: Connection, row_id: int, attempt: int, sets: str, params: dict[str, Any]
) -> bool:
    result = conn.execute(
        text(
            f"UPDATE alert_outbox SET {sets}, lease_until = NULL, updated_at = now() "
            "WHERE id = :id AND state = 'sending' AND attempts = :attempt"
        ),
        {"id": row_id, "attempt": attempt, **params},
    )
    return result.rowcount == 1


def resend(conn: Connection, row_id: int, force: bool = False) -> str:
    """Put a row back in the queue, due now, with a fresh retry budget; returns its old state.

    The closed round's last attempt time becomes `resent_after`: an outcome of that round
    read from `alert-deliveries` later (a lagging consumer) does not end the new round."""
    row = conn.execute(
        text("SELECT state FROM alert_outbox WHERE id = :id FOR UPDATE"), {"id": row_id}
    ).first()
    if row is None:
        raise OutboxRowNotFound(row_id)
    if row.state == "sending" or (row.state == "delivered" and not force):
        raise NotResendable(row_id, row.state)
    conn.execute(
        text(
            "UPDATE alert_outbox SET state = 'pending', attempts = 0, next_attempt_at = now(), "
            "resent_after = coalesce(last_attempt_at, resent_after), "
            "first_attempt_at = NULL, last_attempt_at = NULL, "
            "lease_until = NULL, last_error = :note, updated_at = now() WHERE id = :id"
        ),
        {"id": row_id, "note": f"resent by hand from {row.state}"},
    )
    return str(row.state)


def get(conn: Connection, row_id: int) -> dict[str, Any]:
    row = conn.execute(text("SELECT * FROM alert_outbox WHERE id = :id"), {"id": row_id}).first()
    if row is None:
        raise OutboxRowNotFound(row_id)
    return dict(row._asdict())


def count_by_state(conn: Connection, source: str) -> dict[str, int]:
    rows = conn.execute(
        text("SELECT state, count(*) AS n FROM alert_outbox WHERE source = :s GROUP BY state"),
        {"s": source},
    )
    counts = dict.fromkeys(STATES, 0)
    counts.update({r.state: r.n for r in rows})
    return counts
