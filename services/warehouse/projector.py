"""Turn records of the topics into read-model rows, idempotently.

Each write is keyed so that a record seen twice leaves one row: config events by their
(partition, offset) in `budget-events`, budget rows by revision (the pure fold refuses a replayed
revision), usage by event id within the dedupe window (`seen.py`), crossings by (budget, period,
metric, threshold), policy changes by (budget, effective_at, policy, period), forecasts by
(budget, period) with the newest `as_of`. The consumer runs a batch of records and its offsets in
one transaction.

Which budgets a usage event charges is the pipeline's rule, `streams.selectors.match_budgets`,
asked about the budget revisions in force at the usage record's time (`history.py`), never the
budgets as they are when the projection happens to read the event: a rebuild (all config read
first) and a live run that lags a config change then give the same rows, and a budget retired
or re-scoped later keeps the usage it had. The pipeline's resolve step asks the same function
about the budgets its worker holds when it reads the event, so the two agree except for usage
read by a worker that lagged behind a config change around it (the ledger then follows the
worker's view; this read model, the record times). The charges are not read here: they carry
no feature or model (the finance warehouse needs both) and may expire with their topic's
retention, while usage and config are kept forever. A usage event is charged to the period it
occurred in, in the budget's time zone (`streams.periods.period_of`), and to its local day.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from schemas.allocation import (
    AllocationMoved,
    OverflowDrawn,
    RebalanceRuleSet,
    ReservationMade,
    ReservationReleased,
)
from schemas.base import Event
from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import UsageReader, decode
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated, PolicyChanged, ThresholdCrossed
from schemas.topics import USAGE
from services.common.kafka import partition_for
from services.warehouse import tables as t
from services.warehouse.history import BudgetHistory
from services.warehouse.seen import SeenIds, Sighting
from streams.budgets import Budget, BudgetIndex, apply_budget_event
from streams.errors import StaleRevision
from streams.periods import from_ms, period_of_ms, to_ms, zone
from streams.selectors import match_budgets

log = logging.getLogger(__name__)

CONFIG_KINDS = ("budget-events",)
SIGNAL_KINDS = ("usage", "thresholds", "policies", "forecasts")
KINDS = CONFIG_KINDS + SIGNAL_KINDS
"""Topic suffixes the warehouse reads; config first, so usage meets the budgets in force."""


def pg_safe(value: Any) -> Any:
    """PostgreSQL text and JSONB cannot hold NUL; the read model shows U+FFFD in its place.

    The event itself stays untouched on its topic.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {pg_safe(k): pg_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [pg_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    kind: str
    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp_ms: int = 0
    """Kafka record time: when a config revision comes into force, when usage is matched."""


class Projector:
    """Holds every budget revision seen (to match usage) and writes rows for records.

    Usage is read event by event with the worker's own reader (`schemas.codec.UsageReader`):
    an event the worker dead-letters (the contract, an id that hashes to another usage
    partition than its record's, a time more than the contract's fixed `MAX_AHEAD` past the
    record's broker time) is skipped, logged and counted in `counts["usage_rejected"]`, and
    the other events of its envelope count. Nothing of it is a setting, so the warehouse
    cannot be configured to disagree with the worker. `broker_times` says the records' times
    are real broker times (the consumer's are); without it, as in the worker's resolve stage
    without a clock skew, the broker-time rule does not apply (tests with made-up times).
    """

    def __init__(
        self,
        dedupe_window: timedelta,
        partitions: int = USAGE.partitions,
        broker_times: bool = False,
    ) -> None:
        self.index = BudgetIndex()
        self.history = BudgetHistory()
        self.seen = SeenIds(dedupe_window)
        self.reader = UsageReader(partition_for, partitions, broker_times)
        self.counts: Counter[str] = Counter()

    def load(self, conn: Connection) -> None:
        """Rebuild the in-memory revisions from `budget_revisions` (start, or after a failure)."""
        history = BudgetHistory()
        rows = conn.execute(select(t.budget_revisions).order_by(*_REVISION_ORDER)).mappings()
        for row in rows:
            history.add(Budget.from_dict(dict(row)), to_ms(row["valid_from"]))
        self.history = history
        self.index = history.current()
        self.seen.forget()

    def project(self, conn: Connection, records: Sequence[Record]) -> None:
        usage: list[dict[str, Any]] = []  # each counted usage event's fields
        sightings: list[Sighting] = []  # each usage event's id, position and record time
        for record in sorted(records, key=lambda r: KINDS.index(r.kind)):
            if record.kind == "usage":
                self._read_usage(record, usage, sightings)
                continue
            try:
                event = decode(record.value)
            except AllotmentError as exc:
                self.counts["undecodable"] += 1
                log.warning("skip %s/%d@%d: %s", record.kind, record.partition, record.offset, exc)
                continue
            if record.kind == "budget-events":
                self._config(conn, record, event)
            elif isinstance(event, ThresholdCrossed | PolicyChanged | ForecastUpdated):
                _signal(conn, event)
            else:
                self.counts["ignored"] += 1
        if usage:
            self._usage(conn, usage, sightings)

    def _read_usage(
        self, record: Record, usage: list[dict[str, Any]], sightings: list[Sighting]
    ) -> None:
        """Add the events of a usage record that the worker charges to `usage`."""
        at = record.timestamp_ms
        try:
            envelope, events = self.reader.read(record.value, record.partition, at)
        except AllotmentError as exc:
            self.counts["undecodable"] += 1
            log.warning("skip %s/%d@%d: %s", record.kind, record.partition, record.offset, exc)
            return
        for i, _, event in events:
            if isinstance(event, AllotmentError):
                self.counts["usage_rejected"] += 1
                where = f" (envelope index {i})" if envelope else ""
                log.warning("skip usage %d@%d%s: %s", record.partition, record.offset, where, event)
                continue
            usage.append(event)
            sightings.append((pg_safe(event["event_id"]), (record.offset, i), at))
        self.seen.note(record.partition, at)

    def _config(self, conn: Connection, record: Record, event: Event) -> None:
        row = _audit_row(record, event)
        if row is None:
            self.counts["ignored"] += 1
            return
        conn.execute(insert(t.audit_log).values(pg_safe(row)).on_conflict_do_nothing())
        if isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
            self._budget(conn, event, record.timestamp_ms)

    def _budget(
        self, conn: Connection, event: BudgetDefined | BudgetAmended | BudgetRetired, at_ms: int
    ) -> None:
        try:
            budget = apply_budget_event(self.index.get(event.budget_id), event)
        except StaleRevision as exc:
            self.counts["replayed" if exc.already_applied else "rejected"] += 1
            return
        except AllotmentError as exc:
            self.counts["rejected"] += 1
            log.warning("budget event not applied: %s", exc)
            return
        values = {
            "budget_id": budget.budget_id,
            "tenant": budget.tenant,
            "revision": budget.revision,
            "name": budget.spec.name,
            "parent_id": budget.spec.parent,
            "spec": budget.spec.model_dump(mode="json"),
            "retired": budget.retired,
            "created_at": event.occurred_at,
            "updated_at": event.occurred_at,
            "updated_by": event.actor,
        }
        stmt = insert(t.budgets).values(pg_safe(values))
        changed = {k: stmt.excluded[k] for k in values if k not in ("budget_id", "created_at")}
        conn.execute(stmt.on_conflict_do_update(index_elements=["budget_id"], set_=changed))
        self.index = self.index.with_budget(budget)
        valid_from = self.history.add(budget, at_ms)
        revision = {
            "budget_id": budget.budget_id,
            "tenant": budget.tenant,
            "revision": budget.revision,
            "spec": values["spec"],
            "retired": budget.retired,
            "valid_from": from_ms(valid_from),
        }
        conn.execute(insert(t.budget_revisions).values(pg_safe(revision)).on_conflict_do_nothing())

    def _usage(
        self, conn: Connection, usage: Sequence[dict[str, Any]], sightings: Sequence[Sighting]
    ) -> None:
        fresh = self.seen.counted(conn, sightings)
        self.counts["usage_new"] += len(fresh)
        periods: dict[tuple[str, str], list[Any]] = {}
        days: dict[tuple[str, date, str, str], list[Any]] = {}
        for i in fresh:
            event = usage[i]
            in_force = self.history.at(event["tenant"], sightings[i][2])  # at its record time
            budgets = match_budgets(in_force, SimpleNamespace(**event))
            if not budgets:
                continue
            feature = pg_safe(event["feature"] or "")
            model = pg_safe(event["response_model"] or event["request_model"] or "")
            occurred_at = event["occurred_at"]
            at_ms = to_ms(occurred_at)
            tokens = (event["input_total"], event["output"], event["total"])
            local_day: dict[str, date] = {}
            for budget in budgets:
                period = budget.spec.period
                day = local_day.get(period.timezone)
                if day is None:
                    day = occurred_at.astimezone(zone(period.timezone)).date()
                    local_day[period.timezone] = day
                key = period_of_ms(period, at_ms).key
                _add(periods, (budget.budget_id, key), budget.tenant, tokens)
                _add(days, (budget.budget_id, day, feature, model), budget.tenant, tokens)
        _add_totals(
            conn,
            t.period_usage,
            ["budget_id", "period_key"],
            [_totals_row(("budget_id", "period_key"), k, v) for k, v in periods.items()],
        )
        _add_totals(
            conn,
            t.daily_usage,
            ["budget_id", "day", "feature", "model"],
            [_totals_row(("budget_id", "day", "feature", "model"), k, v) for k, v in days.items()],
        )


TOKEN_COLUMNS = ("input_tokens", "output_tokens", "total_tokens")
UPSERT_CHUNK = 2000  # rows per statement: 10 parameters each, far below PostgreSQL's 65535
_REVISION_ORDER = (
    t.budget_revisions.c.tenant,
    t.budget_revisions.c.valid_from,
    t.budget_revisions.c.budget_id,
    t.budget_revisions.c.revision,
)


def _add(into: dict[Any, list[Any]], key: Any, tenant: str, tokens: tuple[int, int, int]) -> None:
    acc = into.get(key)
    if acc is None:
        into[key] = [tenant, tokens[0], tokens[1], tokens[2], 1]
    else:
        acc[1] += tokens[0]
        acc[2] += tokens[1]
        acc[3] += tokens[2]
        acc[4] += 1


def _totals_row(names: tuple[str, ...], key: tuple[Any, ...], acc: list[Any]) -> dict[str, Any]:
    return {
        **dict(zip(names, key, strict=True)),
        "tenant": acc[0],
        "input_tokens": acc[1],
        "output_tokens": acc[2],
        "total_tokens": acc[3],
        "events": acc[4],
    }


def _add_totals(
    conn: Connection, table: Any, key: list[str], rows: Iterable[dict[str, Any]]
) -> None:
    values = list(rows)
    for start in range(0, len(values), UPSERT_CHUNK):
        stmt = insert(table).values(values[start : start + UPSERT_CHUNK])
        added = {c: table.c[c] + stmt.excluded[c] for c in (*TOKEN_COLUMNS, "events")}
        conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=added))


def _signal(conn: Connection, event: ThresholdCrossed | PolicyChanged | ForecastUpdated) -> None:
    payload = event.to_wire()
    if isinstance(event, ThresholdCrossed):
        row = {
            "budget_id": event.budget_id,
            "period_key": event.period_key,
            "metric": event.metric,
            "threshold": event.threshold,
            "tenant": event.tenant,
            "crossed_at": event.crossed_at,
            "payload": payload,
        }
        conn.execute(insert(t.thresholds).values(pg_safe(row)).on_conflict_do_nothing())
    elif isinstance(event, PolicyChanged):
        row = {
            "budget_id": event.budget_id,
            "effective_at": event.effective_at,
            "policy": event.policy,
            "period_key": event.period_key,
            "tenant": event.tenant,
            "payload": payload,
        }
        conn.execute(insert(t.policies).values(pg_safe(row)).on_conflict_do_nothing())
    else:
        row = {
            "budget_id": event.budget_id,
            "period_key": event.period_key,
            "tenant": event.tenant,
            "as_of": event.as_of,
            "payload": payload,
        }
        stmt = insert(t.forecasts).values(pg_safe(row))
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["budget_id", "period_key"],
                set_={"as_of": stmt.excluded.as_of, "payload": stmt.excluded.payload},
                where=t.forecasts.c.as_of < stmt.excluded.as_of,
            )
        )


def _audit_row(record: Record, event: Event) -> dict[str, Any] | None:
    if isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired):
        budget_id: str | None = event.budget_id
        revision: int | None = event.revision
    elif isinstance(event, OverflowDrawn | ReservationMade | ReservationReleased):
        budget_id, revision = event.budget_id, None
    elif isinstance(event, AllocationMoved):
        budget_id, revision = event.from_budget_id, None
    elif isinstance(event, RebalanceRuleSet):
        budget_id, revision = None, None
    else:
        return None
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "tenant": event.tenant,
        "event_type": event.TYPE,
        "budget_id": budget_id,
        "actor": event.actor,
        "reason": event.reason,
        "occurred_at": event.occurred_at,
        "revision": revision,
        "payload": event.to_wire(),  # made NUL-safe with the whole row
    }
