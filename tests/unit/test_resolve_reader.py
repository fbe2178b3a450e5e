"""`UsageReader`, the one reader of the usage topic: event by event, with each refusal's reason.

The worker's resolve stage and the warehouse both read usage through it; these pin what it
yields and that the resolve stage dead-letters exactly what it refuses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from schemas.codec import UsageReader
from schemas.errors import AllotmentError, InvalidEvent
from services.common.kafka import partition_for
from streams.budgets import BudgetIndex
from streams.faust.dedupe_log import MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)
PARTITIONS = 6
READER = UsageReader(partition_for, PARTITIONS)


def on(partition: int, prefix: str) -> str:
    return next(
        f"{prefix}{i}"
        for i in range(10_000)
        if partition_for(f"{prefix}{i}", PARTITIONS) == partition
    )


def wire(event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": event_id, "source": "t",
        "occurred_at": AT.isoformat(), "received_at": AT.isoformat(), "tenant": "acme",
        "input_uncached": 10, "output": 1, **fields,
    }  # fmt: skip


def envelope(*events: Any) -> bytes:
    return orjson.dumps({"type": "UsageBatch", "version": 1, "events": list(events)})


def test_each_event_of_an_envelope_is_read_or_refused_on_its_own() -> None:
    ahead = (AT + timedelta(days=2)).isoformat()
    events = [
        wire(on(1, "a")),
        wire(on(1, "b"), occurred_at=ahead),  # the contract: after received_at
        wire(on(2, "c")),  # another partition
        wire(on(1, "d"), occurred_at=ahead, received_at=ahead),  # after the broker's time
        "not an event",
        wire(on(1, "e"), output=3),
    ]
    is_envelope, items = READER.read(envelope(*events), 1, AT_MS)
    read = list(items)
    assert is_envelope
    assert [i for i, _, _ in read] == list(range(6))
    assert [payload for _, payload, _ in read] == events
    valid = [(i, e["event_id"], e["output"]) for i, _, e in read if isinstance(e, dict)]
    assert valid == [(0, events[0]["event_id"], 1), (5, events[5]["event_id"], 3)]
    reasons = {i: str(e) for i, _, e in read if isinstance(e, AllotmentError)}
    assert "occurred_at: must not be more than 1 day, 0:00:00 after received_at" in reasons[1]
    assert "event_id: hashes to usage partition 2, arrived on 1" in reasons[2]
    assert "after the time the broker stored the record" in reasons[3]
    assert "(payload): must be a JSON object" in reasons[4]


def test_a_single_event_record_and_an_unreadable_record() -> None:
    is_envelope, items = READER.read(orjson.dumps(wire(on(3, "x"))), 3, AT_MS)
    [(index, _, event)] = list(items)
    assert (is_envelope, index, isinstance(event, dict)) == (False, 0, True)
    for raw in (b"{", envelope()[:-2] + b"]}", orjson.dumps({"type": "UsageBatch", "events": []})):
        with pytest.raises(InvalidEvent):
            READER.read(raw, 3, AT_MS)
    # Without a broker time, only the contract and the partition apply.
    ahead = (AT + timedelta(days=2)).isoformat()
    _, items = READER.read(envelope(wire(on(3, "y"), occurred_at=ahead, received_at=ahead)), 3, 0)
    assert all(isinstance(event, dict) for _, _, event in items)


def test_the_resolve_stage_dead_letters_exactly_what_the_reader_refuses() -> None:
    events = [wire(on(4, "a")), wire(on(0, "b")), wire(on(4, "c"), reasoning=5), wire(on(4, "d"))]
    raw = envelope(*events)
    _, items = READER.read(raw, 4, AT_MS)
    refused = [(i, str(e)) for i, _, e in items if isinstance(e, AllotmentError)]
    resolver = Resolver(
        "p.usage",
        PARTITIONS,
        MemoryDedupeIndex(10**9),
        BudgetIndex,
        broker_times=True,
    )
    out = resolver.resolve([UsageRecord(4, 0, AT_MS, raw)])
    assert [(r.index, r.reason) for r in out.rejected] == refused
    assert out.events_in == len(events) - len(refused) == 2


def test_an_event_a_few_minutes_ahead_of_its_broker_time_is_read() -> None:
    """A gateway 10 minutes fast, both times it stamped, in a record of any age: read. The
    allowance is the contract's `MAX_AHEAD`, not a setting, so no reader can refuse it."""
    fast = (AT + timedelta(minutes=10)).isoformat()
    fast_receipt = wire(on(1, "f"), occurred_at=fast, received_at=fast)
    fast_occurrence = wire(on(1, "g"), occurred_at=fast)
    _, items = READER.read(envelope(fast_receipt, fast_occurrence), 1, AT_MS)
    assert [isinstance(event, dict) for _, _, event in items] == [True, True]
