"""The outcomes recorded on `alert-deliveries`, kept in PostgreSQL (`alert_outcomes`).

The topic, not the outbox, is the record of what was delivered. The consumer folds every
outcome event it reads into this table, in the transaction that stores its offsets, and settles
the outbox rows of those alerts (`outbox.adopt_outcomes`). The consumer catches up on the topic
before it reads any signal, so an outbox rebuilt from the signal topics (a lost database, a
fresh deployment on the same topics) finds each alert's outcome when its row is inserted, and
nothing the topic records as delivered or abandoned is sent again. Outcomes that arrive later
(another worker's) settle the rows they concern as they are read.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import Connection, text

from schemas.alerts import AlertAbandoned, AlertDelivered, AlertOutcome
from schemas.codec import encode, from_dict
from services.alerts.outcomes import fold, row_facts

_LOAD = text("SELECT event FROM alert_outcomes WHERE source = :s AND alert_id = ANY(:ids)")
_STORE = text(
    "INSERT INTO alert_outcomes (source, alert_id, state, attempts, first_attempt_at, "
    "last_attempt_at, delivered_at, last_error, event) VALUES (:source, :alert_id, :state, "
    ":attempts, :first_attempt_at, :last_attempt_at, :delivered_at, :last_error, "
    "CAST(:event AS jsonb)) ON CONFLICT (source, alert_id) DO UPDATE SET state = EXCLUDED.state, "
    "attempts = EXCLUDED.attempts, first_attempt_at = EXCLUDED.first_attempt_at, "
    "last_attempt_at = EXCLUDED.last_attempt_at, delivered_at = EXCLUDED.delivered_at, "
    "last_error = EXCLUDED.last_error, event = EXCLUDED.event"
)


def record(conn: Connection, source: str, events: Sequence[AlertOutcome]) -> list[str]:
    """Fold `events` (in log order) into the stored outcomes of `source`.

    Returns the alert ids whose current outcome changed; a repeat, or an outcome older than
    the one stored (`outcomes.fold` decides), changes nothing.
    """
    if not events:
        return []
    ids = sorted({e.alert_id for e in events})
    history = load(conn, source, ids)
    current = fold(events, history)
    changed = [e for alert_id, e in current.items() if history.get(alert_id) != e]
    if changed:
        conn.execute(
            _STORE,
            [
                {
                    "source": source,
                    "alert_id": e.alert_id,
                    "event": encode(e).decode(),
                    **row_facts(e),
                }
                for e in changed
            ],
        )
    return sorted(e.alert_id for e in changed)


def load(conn: Connection, source: str, alert_ids: Sequence[str]) -> dict[str, AlertOutcome]:
    """alert id -> its stored current outcome, for those of `alert_ids` that have one."""
    found: dict[str, AlertOutcome] = {}
    for row in conn.execute(_LOAD, {"s": source, "ids": list(alert_ids)}):
        payload = row.event if isinstance(row.event, dict) else orjson.loads(row.event)
        event = from_dict(payload)
        if isinstance(event, AlertDelivered | AlertAbandoned):
            found[event.alert_id] = event
    return found
