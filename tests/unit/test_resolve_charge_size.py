"""Resolve never emits a charge too large to send: many lines are split, in position order."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

import streams.faust.resolve as resolve
from schemas.budgets import BudgetDefined, BudgetSpec
from services.common.usage_producer import pack_envelopes
from streams.budgets import Budget, BudgetIndex
from streams.faust.dedupe_log import MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _event(i: int) -> dict[str, object]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": f"e{i}", "source": "t",
        "occurred_at": AT.isoformat(), "received_at": AT.isoformat(), "tenant": "acme",
        "input_uncached": 10, "output": 1,
    }  # fmt: skip


def test_a_large_batch_is_charged_in_several_messages_in_position_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resolve, "MAX_CHARGE_LINES", 7)
    spec = BudgetSpec.model_validate({"name": "all", "limits": {"total_tokens": 10**9}})
    event = BudgetDefined(
        budget_id="all", tenant="acme", revision=1, occurred_at=AT, actor="t", spec=spec
    )
    index = BudgetIndex([Budget(event.budget_id, event.tenant, event.revision, event.spec)])
    packed = pack_envelopes([_event(i) for i in range(200)], 2, 10)
    partition = packed[0][0]
    mine = [value for p, _, value in packed if p == partition]
    resolver = Resolver("p.usage", 2, MemoryDedupeIndex(10**9), lambda: index)
    out = resolver.resolve([UsageRecord(partition, o, 1, v) for o, v in enumerate(mine)])
    charges = [orjson.loads(raw) for _, raw in out.charges]
    expected = sum(len(orjson.loads(v)["events"]) for v in mine)
    assert len(charges) == -(-expected // 7)
    assert all(1 <= len(c["lines"]) <= 7 for c in charges)
    positions = [tuple(line[:2]) for c in charges for line in c["lines"]]
    assert positions == sorted(set(positions)) and len(positions) == expected
