"""The resolve stage: read usage records, dedupe by event_id, fan out one charge per budget.

One consumed batch (any mix of envelopes and single-event messages, from any partitions) gives:
- per (budget, source partition), one `BudgetCharged` listing its lines in position order, or
  several in a row when there are more than `MAX_CHARGE_LINES` (a message over the producer's
  1 MB limit is refused: the charge would be lost);
- per source partition, the dedupe `BatchRecord`s of the batch (the ids seen first, or again at
  the same position), cut to fit a message (`RecordCutter`); the agent writes them to the
  dedupe table and then hands them to the index (`keep`), so a crash between the two leaves
  the table ahead of the index (a cheap merge at recovery), never the index ahead;
- a dead letter per unreadable record or unreadable event inside an envelope, and per event
  that claims to have happened after the broker stored it (beyond the clock skew allowed,
  `clock_skew`): charged, it would move its budgets' "now" ahead and close their current period.

Nothing here touches Faust: the agent feeds records in and writes what comes out, so the whole
stage is tested without a broker. The rules are the domain's: `classify` (dedupe),
`match_budgets` (selectors); this module only keeps positions and groups lines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.base import field_errors
from schemas.codec import upcast
from schemas.errors import AllotmentError, FieldError, InvalidEvent
from schemas.usage import UsageRecorded, ahead_problem, usage_fields
from services.common.kafka import partition_for
from streams.budgets import Budget, BudgetIndex
from streams.faust.app import InvalidWorkerConfig
from streams.faust.deadletter import Rejected, reason_of
from streams.faust.dedupe_log import BatchRecord, DedupeIndex, RecordCutter
from streams.ledger import Position
from streams.periods import from_ms, to_ms
from streams.selectors import match_budgets


@dataclass(frozen=True)
class UsageRecord:
    """One consumed Kafka record of the usage topic."""

    partition: int
    offset: int
    timestamp_ms: int
    """The record's broker timestamp (epoch ms); 0 or less when it has none."""
    value: bytes | None


@dataclass
class ResolvedBatch:
    charges: list[tuple[str, bytes]] = field(default_factory=list)
    records: list[BatchRecord] = field(default_factory=list)
    expired: dict[int, list[str]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    events_in: int = 0
    duplicates: int = 0
    redeliveries: int = 0
    unmatched: int = 0
    reread: int = 0


MAX_CHARGE_LINES = 10_000
"""Lines per charge message: about 35 bytes each, so well under the 1 MB a message may have.
Successive charges of one (budget, source partition) continue in position order, which is
all the ledger's watermark needs."""

_VALIDATE = UsageRecorded.__pydantic_validator__.validate_python
_DIMENSIONS = itemgetter(
    "tenant", "team", "feature", "user", "virtual_key", "provider", "request_model",
    "response_model",
)  # fmt: skip


def _parse_event(payload: Any) -> dict[str, Any]:
    """Validate one usage event against the contract (upcasting an older version first).

    Returns its field values: `usage_fields` when it can say (most events, at about half the
    cost of building the model), else the model's, which also raises the contract's reasons.
    """
    if not isinstance(payload, dict):
        raise InvalidEvent("UsageRecorded", [FieldError("(payload)", "must be a JSON object")])
    kind = payload.get("type", "UsageRecorded")
    if kind != "UsageRecorded":
        raise InvalidEvent(
            "UsageRecorded", [FieldError("type", f"must be UsageRecorded, got {kind!r}")]
        )
    if payload.get("version", 1) != UsageRecorded.VERSION:
        payload = upcast({**payload, "type": kind})
    else:
        fields = usage_fields(payload)
        if fields is not None:
            return fields
    try:
        event: UsageRecorded = _VALIDATE(payload)
    except ValidationError as exc:
        raise InvalidEvent("UsageRecorded", field_errors(exc)) from None
    return event.__dict__


def _dimensions(event: dict[str, Any]) -> tuple[Any, ...]:
    """Everything a selector looks at: events alike in these match the same budgets."""
    return (*_DIMENSIONS(event), tuple(event["tags"]))


def _events_of(raw: bytes) -> tuple[bool, list[tuple[int, Any]]]:
    """Whether the record is an envelope, and its (index, payload) pairs."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("(unknown)", [FieldError("(payload)", f"is not JSON: {exc}")]) from None
    if isinstance(payload, dict) and payload.get("type") == "UsageBatch":
        events = payload.get("events")
        if not isinstance(events, list) or not events:
            raise InvalidEvent("UsageBatch", [FieldError("events", "must be a non-empty list")])
        if payload.get("version", 1) != 1:
            raise InvalidEvent("UsageBatch", [FieldError("version", "must be 1")])
        return True, list(enumerate(events))
    return False, [(0, payload)]


BROKER_TIME = "the time the broker stored the record"


class Resolver:
    """Turns consumed usage records into charges, dedupe records and dead letters.

    With `clock_skew` set, an event whose occurred_at is more than that after its record's
    broker timestamp is dead-lettered (the reason names occurred_at and the rule), before
    dedupe sees it: the same event sent again with a corrected time is charged. The record's
    timestamp is set where the record is written (our producers, or the broker itself with
    LogAppendTime), not by the event's source, and it is stored with the record, so a replay
    rejects exactly what the first run rejected. The contract's own rule
    (`schemas.usage.CLOCK_SKEW` against received_at) applies with or without it. None (the
    default, for feeds whose record times are not real times) checks the contract only.
    """

    def __init__(
        self,
        topic: str,
        partitions: int,
        dedupe: DedupeIndex,
        budgets: Callable[[], BudgetIndex],
        committed: Callable[[int], int | None] | None = None,
        clock_skew: timedelta | None = None,
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.dedupe = dedupe
        self._budgets = budgets
        self._committed = committed
        if clock_skew is not None and clock_skew < timedelta(0):
            raise InvalidWorkerConfig("clock_skew", "must not be negative")
        self.clock_skew = clock_skew
        self._takes: dict[int, deque[tuple[int, int]]] = {}
        """Per usage partition, (last offset, latest record time) of the takes kept and not
        yet known committed, in the order they were read."""

    def resolve(self, records: Sequence[UsageRecord]) -> ResolvedBatch:
        out = ResolvedBatch()
        index = self._budgets()
        lines: dict[tuple[str, int], list[list[int]]] = {}
        tenants: dict[str, str] = {}
        batch = RecordCutter()
        matched: dict[tuple[Any, ...], list[Budget]] = {}  # match_budgets per kind of event
        high: dict[int, int] = {}  # per partition, the highest offset handled in this batch
        for record in records:
            if record.offset <= high.get(record.partition, -1):
                # Read again after a rebalance's seek while still in this batch: already handled
                # above, and a charge must list its positions in increasing order.
                out.reread += 1
                continue
            high[record.partition] = record.offset
            self._resolve_record(record, index, out, lines, tenants, batch, matched)
        for (budget_id, partition), budget_lines in lines.items():
            for first in range(0, len(budget_lines), MAX_CHARGE_LINES):
                charge = {
                    "type": "BudgetCharged",
                    "version": 1,
                    "budget_id": budget_id,
                    "tenant": tenants[budget_id],
                    "source_partition": partition,
                    "lines": budget_lines[first : first + MAX_CHARGE_LINES],
                }
                out.charges.append((budget_id, orjson.dumps(charge)))
        for records_of in batch.records().values():
            out.records.extend(records_of)
        return out

    def keep(self, out: ResolvedBatch) -> dict[int, list[str]]:
        """Hand the batch's records to the index once they are in the table, and expire what
        left the window; returns the expired table keys per partition (to delete from the
        table).

        "Now" for expiry is the latest record time of the takes whose offsets are committed
        (`committed(partition)`: the next offset a restarted worker reads), never the take's
        own: a take not yet committed is read again after a crash, and its records must then
        still find the batches that made them duplicates (an expiry's table deletes are as
        durable as the take's table writes). A record read again comes after the committed
        ones, so its time is at least their latest minus the slack, more than the window
        after anything expired. Without `committed` nothing is known committed: no expiry.
        """
        latest: dict[int, tuple[int, int]] = {}
        for record in out.records:
            self.dedupe.add(record)
            last, time_ms = latest.get(record.partition, (-1, 0))
            latest[record.partition] = (
                max(last, record.last_offset),
                max(time_ms, record.record_time_ms),
            )
        if self._committed is None:
            return out.expired
        for partition, take in latest.items():
            self._takes.setdefault(partition, deque()).append(take)
        for partition, takes in self._takes.items():
            committed = self._committed(partition)
            now_ms = None
            while takes and committed is not None and takes[0][0] < committed:
                time_ms = takes.popleft()[1]
                now_ms = time_ms if now_ms is None else max(now_ms, time_ms)
            expired = [] if now_ms is None else self.dedupe.expire(partition, now_ms)
            if expired:
                out.expired[partition] = expired
        return out.expired

    def _reject(
        self,
        out: ResolvedBatch,
        record: UsageRecord,
        exc: AllotmentError,
        payload: bytes,
        index: int | None,
    ) -> None:
        reason, errors = reason_of(exc)
        out.rejected.append(
            Rejected(self.topic, record.partition, record.offset, reason, payload, errors, index)
        )

    def _resolve_record(
        self,
        record: UsageRecord,
        index: BudgetIndex,
        out: ResolvedBatch,
        lines: dict[tuple[str, int], list[list[int]]],
        tenants: dict[str, str],
        batch: RecordCutter,
        matched: dict[tuple[Any, ...], list[Budget]],
    ) -> None:
        raw = record.value or b""
        try:
            envelope, payloads = _events_of(raw)
        except AllotmentError as exc:
            self._reject(out, record, exc, raw, None)
            return
        partition, offset = record.partition, record.offset
        skew = self.clock_skew
        stored_at: datetime | None = None
        if skew is not None and record.timestamp_ms > 0:
            stored_at = from_ms(record.timestamp_ms)
        classify = self.dedupe.classify
        targets_of: dict[tuple[Any, ...], list[list[list[int]]]] = {}  # dims -> charge lines
        ids: list[str] = []
        positions: list[Position] = []
        events_in = 0
        for position_index, payload in payloads:
            try:
                event = _parse_event(payload)
                event_id = event["event_id"]
                home = partition_for(event_id, self.partitions)
                if home != partition:
                    rule = f"hashes to usage partition {home}, arrived on {partition}"
                    raise InvalidEvent("UsageRecorded", [FieldError("event_id", rule)])
                if stored_at is not None and skew is not None:
                    ahead = ahead_problem(event["occurred_at"], stored_at, BROKER_TIME, skew)
                    if ahead is not None:
                        raise InvalidEvent("UsageRecorded", [FieldError("occurred_at", ahead)])
            except AllotmentError as exc:
                where = position_index if envelope else None
                self._reject(out, record, exc, orjson.dumps(payload), where)
                continue
            events_in += 1
            position = (offset, position_index)
            kind = classify(partition, event_id, position, record.timestamp_ms)
            if kind == "duplicate":
                out.duplicates += 1
                continue
            if kind == "redelivery":
                out.redeliveries += 1
            ids.append(event_id)
            positions.append(position)
            dims = _dimensions(event)
            targets = targets_of.get(dims)
            if targets is None:
                budgets = matched.get(dims)
                if budgets is None:
                    budgets = matched[dims] = match_budgets(index, SimpleNamespace(**event))
                targets = targets_of[dims] = []
                for budget in budgets:
                    key = (budget.budget_id, partition)
                    found = lines.get(key)
                    if found is None:
                        found = lines[key] = []
                        tenants[budget.budget_id] = budget.tenant
                    targets.append(found)
            if not targets:
                out.unmatched += 1
                continue
            line = [
                offset,
                position_index,
                to_ms(event["occurred_at"]),
                event["input_total"],
                event["output"],
            ]
            for found in targets:
                found.append(line)
        out.events_in += events_in
        if ids:
            batch.extend(partition, ids, positions, record.timestamp_ms)
