"""A gateway whose clock is a few minutes fast is billed usage, not bad input.

Review of the future-stamped-usage fix: with the contract refusing occurred_at more than 5
minutes after received_at, a gateway 6 minutes fast had all its real usage refused with a 422,
which most gateways do not retry: lost, against the provider's bill. Now only an absurd time
(more than `schemas.usage.MAX_AHEAD`, a day) is refused; a fast clock's events are accepted,
charged to the period they name, and the worker's ledger cap (`CLOCK_SKEW`) keeps its "now".
Over HTTP against the real ingest app (an in-memory sink: Kafka is not the subject here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
from ingest_support import MemorySink, key_ring, serve

from schemas.budgets import BudgetSpec
from schemas.topics import USAGE
from schemas.usage import CLOCK_SKEW
from services.common.kafka import partition_for
from services.ingest.keys import hash_key
from streams.budgets import Budget, BudgetIndex
from streams.faust.dedupe_log import MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord
from streams.ledger import ChargeLine, LedgerState, apply_charge
from streams.periods import to_ms

KEY = "clock-ahead-key"
DAY_RULE = "must not be more than 1 day, 0:00:00 after received_at"


async def test_a_fast_clock_is_accepted_and_charged_an_absurd_one_refused() -> None:
    keys = key_ring({"id": "fast-gw", "tenant": "fastco", "key_sha256": hash_key(KEY)})
    sink = MemorySink()
    now = datetime.now(UTC)
    fast = {"source_request_id": "fast-1", "occurred_at": (now + timedelta(minutes=10)).isoformat(),
            "input_uncached": 10, "output": 5}  # fmt: skip
    typo = {"source_request_id": "typo-1", "occurred_at": (now + timedelta(days=2)).isoformat(),
            "input_uncached": 10, "output": 5}  # fmt: skip
    headers = {"Authorization": f"Bearer {KEY}"}
    with serve(keys, sink) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            accepted = await client.post("/v1/usage", json=[fast], headers=headers)
            refused = await client.post("/v1/usage", json=[typo], headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 1
    assert refused.status_code == 422, refused.text
    [rejection] = refused.json()["rejected"]
    assert rejection["field"] == "occurred_at"
    assert rejection["rule"].startswith(DAY_RULE), rejection

    [event] = sink.events
    ahead = event.occurred_at - event.received_at
    assert CLOCK_SKEW < ahead <= timedelta(minutes=10)
    # The worker charges it (its record's broker time is about when ingest received it) ...
    spec = BudgetSpec(name="all", limits={"total_tokens": 1000})
    budget = Budget("all", "fastco", 1, spec)
    index = BudgetIndex([budget])
    resolver = Resolver(
        "p.usage", USAGE.partitions, MemoryDedupeIndex(10**12), lambda: index, broker_times=True
    )
    stored_ms = to_ms(event.received_at)
    value = orjson.dumps(event.to_wire())
    home = partition_for(event.event_id, USAGE.partitions)
    out = resolver.resolve([UsageRecord(home, 0, stored_ms, value)])
    assert out.rejected == []
    [(_, raw)] = out.charges
    [line] = orjson.loads(raw)["lines"]
    assert line[2] == to_ms(event.occurred_at)
    # ... and the ledger's "now" stops at the charge record's time plus the cap.
    cap = stored_ms + CLOCK_SKEW // timedelta(milliseconds=1)
    charge = ChargeLine((0, 0), line[2], 10, 5)
    result = apply_charge(
        LedgerState("all"), budget, home, [charge], timedelta(days=2), newest_trusted_ms=cap
    )
    assert result.applied == 1
    assert sum(period.total for period in result.state.periods.values()) == 15
    assert result.state.event_time_high_ms == cap < to_ms(event.occurred_at)
