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
  that claims to have happened absurdly long after the broker stored it (more than the
  contract's `MAX_AHEAD`: a wrong year, a clock reset), which did not happen when it says.

Nothing here touches Faust: the agent feeds records in and writes what comes out, so the whole
stage is tested without a broker. The rules are the domain's: which events of a record are
charged and why not (`schemas.codec.UsageReader`: contract, partition, broker time; the
warehouse reads usage through it too, so both count the same events), `classify` (dedupe),
`match_budgets` (selectors); this module only keeps positions and groups lines.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import SimpleNamespace
from typing import Any

import orjson

from schemas.codec import UsageReader
from schemas.errors import AllotmentError
from services.common.kafka import partition_for
from streams.budgets import Budget, BudgetIndex
from streams.faust.deadletter import Rejected, reason_of
from streams.faust.dedupe_log import BatchRecord, DedupeIndex, RecordCutter
from streams.ledger import Position
from streams.periods import to_ms
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

_DIMENSIONS = itemgetter(
    "tenant", "team", "feature", "user", "virtual_key", "provider", "request_model",
    "response_model",
)  # fmt: skip


def _dimensions(event: dict[str, Any]) -> tuple[Any, ...]:
    """Everything a selector looks at: events alike in these match the same budgets."""
    return (*_DIMENSIONS(event), tuple(event["tags"]))


class Resolver:
    """Turns consumed usage records into charges, dedupe records and dead letters.

    With `broker_times` (the worker's records carry the broker's append time), an event
    whose occurred_at is more than
    `schemas.usage.MAX_AHEAD` after its record's is dead-lettered (the reason names
    occurred_at and the rule), before dedupe sees it, so the same event sent again with a
    corrected time is charged. The allowance is the contract's fixed constant, not the cap: an
    event a few minutes ahead is charged (the charge stage caps the ledger's "now" at the
    charge record's time plus `WorkerConfig.clock_skew`), and the warehouse, reading through
    the same `UsageReader`, refuses exactly the same events on any replay. The record's
    timestamp is set where the record is written (our producers, or the broker with
    LogAppendTime), not by the event's source. Without it (the default, for feeds whose record
    times are not real times) only the contract is checked (which applies `MAX_AHEAD` against
    received_at either way).
    """

    def __init__(
        self,
        topic: str,
        partitions: int,
        dedupe: DedupeIndex,
        budgets: Callable[[], BudgetIndex],
        committed: Callable[[int], int | None] | None = None,
        broker_times: bool = False,
    ) -> None:
        self.topic = topic
        self.partitions = partitions
        self.dedupe = dedupe
        self._budgets = budgets
        self._committed = committed
        self.reader = UsageReader(partition_for, partitions, broker_times=broker_times)
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
            envelope, events = self.reader.read(raw, record.partition, record.timestamp_ms)
        except AllotmentError as exc:
            self._reject(out, record, exc, raw, None)
            return
        partition, offset = record.partition, record.offset
        classify = self.dedupe.classify
        targets_of: dict[tuple[Any, ...], list[list[list[int]]]] = {}  # dims -> charge lines
        ids: list[str] = []
        positions: list[Position] = []
        events_in = 0
        for position_index, payload, event in events:
            if isinstance(event, AllotmentError):
                where = position_index if envelope else None
                self._reject(out, record, event, orjson.dumps(payload), where)
                continue
            event_id = event["event_id"]
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
