"""The worker's adapter logic without a broker: resolve, the dedupe log, policy publication."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import orjson

from schemas.budgets import BudgetDefined, BudgetSpec
from services.common.kafka import partition_for
from services.common.usage_producer import pack_envelopes
from streams.budgets import Budget, BudgetIndex
from streams.faust.charging import in_position_order
from streams.faust.dedupe_log import BatchRecord, MemoryDedupeIndex
from streams.faust.policy_publishing import should_publish
from streams.faust.resolve import Resolver, UsageRecord
from streams.faust.worker import GC_THRESHOLDS, tune_gc
from streams.ledger import ChargeLine

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DAY_MS = 86_400_000


def _event(event_id: str, team: str = "a", tokens: int = 10) -> dict[str, object]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": event_id, "source": "t",
        "occurred_at": AT.isoformat(), "received_at": AT.isoformat(), "tenant": "acme",
        "team": team, "input_uncached": tokens, "output": 1,
    }  # fmt: skip


def _index() -> BudgetIndex:
    def budget(budget_id: str, spec: dict[str, object]) -> Budget:
        event = BudgetDefined(
            budget_id=budget_id, tenant="acme", revision=1, occurred_at=AT, actor="t",
            spec=BudgetSpec.model_validate(spec),
        )  # fmt: skip
        return Budget(event.budget_id, event.tenant, event.revision, event.spec)

    return BudgetIndex([
        budget("all", {"name": "all", "limits": {"total_tokens": 1000}}),
        budget("team-a", {"name": "a", "selector": {"team": ["a"]},
                          "limits": {"total_tokens": 1000}}),
    ])  # fmt: skip


def _resolver() -> Resolver:
    index = _index()
    return Resolver("p.usage", 6, MemoryDedupeIndex(7 * DAY_MS), lambda: index)


def _home(event_id: str) -> int:
    return partition_for(event_id, 6)


def _record(partition: int, offset: int, value: bytes) -> UsageRecord:
    return UsageRecord(partition, offset, 1_000, value)


def _charges(out: object) -> dict[str, dict]:
    return {budget_id: orjson.loads(raw) for budget_id, raw in out.charges}  # type: ignore[attr-defined]


def test_one_charge_per_budget_lists_every_line_in_position_order() -> None:
    events = [_event(f"e{i}", team="a" if i % 2 else "b") for i in range(40)]
    packed = pack_envelopes(events, 6, 8)
    partition = packed[0][0]
    mine = [value for p, _, value in packed if p == partition]
    out = _resolver().resolve([_record(partition, o, v) for o, v in enumerate(mine)])
    charges = _charges(out)
    assert set(charges) <= {"all", "team-a"}
    lines = charges["all"]["lines"]
    assert [line[:2] for line in lines] == sorted(line[:2] for line in lines)
    assert sum(len(orjson.loads(v)["events"]) for v in mine) == len(lines)
    assert all(line[3] == 10 and line[4] == 1 for line in lines)


def test_a_copy_at_another_offset_is_dropped_and_a_redelivery_is_emitted_again() -> None:
    resolver = _resolver()
    event_id = "dup-1"
    p = _home(event_id)
    value = orjson.dumps(_event(event_id))
    first = resolver.resolve([_record(p, 5, value)])
    copy = resolver.resolve([_record(p, 9, value)])
    again = resolver.resolve([_record(p, 5, value)])
    assert _charges(first)["all"]["lines"][0][:2] == [5, 0]
    assert copy.duplicates == 1 and not copy.charges
    assert again.redeliveries == 1
    assert _charges(again)["all"]["lines"][0][:2] == [5, 0]


def test_a_batch_that_reads_offsets_again_handles_each_once() -> None:
    resolver = _resolver()
    ids = [f"rr{i}" for i in range(200)]
    p = _home(ids[0])
    mine = [i for i in ids if _home(i) == p][:3]
    records = [_record(p, o, orjson.dumps(_event(i))) for o, i in enumerate(mine)]
    out = resolver.resolve(records + records[1:])  # a seek back to offset 1 within the batch
    assert out.reread == len(mine) - 1
    assert [line[0] for line in _charges(out)["all"]["lines"]] == list(range(len(mine)))


def test_unreadable_records_become_dead_letters_with_their_origin() -> None:
    resolver = _resolver()
    good = _event("ok-1")
    p = _home("ok-1")
    wrong = next(f"w{i}" for i in range(100) if _home(f"w{i}") != p)
    bad = {**_event("bad-1"), "input_uncached": -1}
    envelope = orjson.dumps({"type": "UsageBatch", "version": 1, "events": [good, bad]})
    out = resolver.resolve([
        _record(p, 0, b"\xff garbage"),
        _record(p, 1, envelope),
        _record(p, 2, orjson.dumps(_event(wrong))),
    ])  # fmt: skip
    reasons = {(r.offset, r.index): r for r in out.rejected}
    assert "is not JSON" in reasons[(0, None)].reason
    assert any(e.startswith("input_uncached") for e in reasons[(1, 1)].errors)
    assert "hashes to usage partition" in reasons[(2, None)].reason
    assert _charges(out)["all"]["lines"] == [[1, 0, _charges(out)["all"]["lines"][0][2], 10, 1]]


def test_dedupe_history_expires_after_the_window_and_survives_a_rebuild() -> None:
    index = MemoryDedupeIndex(window_ms=1_000, slack_ms=0)
    assert index.classify(0, "x", (1, 0), 100) == "new"
    record = BatchRecord(0, 1, 1, 100, ["x"], [(1, 0)])
    index.add(record)
    rebuilt = MemoryDedupeIndex(window_ms=1_000, slack_ms=0)
    rebuilt.reset([BatchRecord.from_dict(orjson.loads(orjson.dumps(record.to_dict())))])
    assert rebuilt.classify(0, "x", (2, 0), 1_050) == "duplicate"
    assert rebuilt.expire(0, 1_050) == []
    assert rebuilt.expire(0, 1_101) == [record.key]
    assert rebuilt.classify(0, "x", (3, 0), 1_101) == "new"


def test_a_policy_is_published_only_when_it_changes_forward() -> None:
    def policy(name: str, period: str, at: str, limit: int = 100) -> dict[str, object]:
        return {"policy": name, "period_key": period, "effective_at": at, "limit": limit,
                "target_model": None, "model_map": {}}  # fmt: skip

    hard = policy("hard_stop", "2026-11", "2026-11-20T10:00:00Z")
    assert should_publish(None, hard)
    assert not should_publish(None, policy("allow", "2026-11", "2026-11-20T10:00:00Z"))
    # A replay passing an earlier point, or a milder decision at the same limit: not published.
    assert not should_publish(hard, policy("degrade_route", "2026-11", "2026-11-20T09:00:00Z"))
    assert not should_publish(hard, policy("degrade_route", "2026-11", "2026-11-20T11:00:00Z"))
    # A raised limit, or the next period, is.
    assert should_publish(hard, policy("allow", "2026-11", "2026-11-20T11:00:00Z", limit=500))
    assert should_publish(hard, policy("allow", "2026-12", "2026-12-01T00:00:01Z"))


def test_charge_lines_are_sorted_and_each_position_kept_once() -> None:
    lines = [ChargeLine((5, 1), 0, 1, 0), ChargeLine((5, 0), 0, 2, 0), ChargeLine((5, 1), 0, 1, 0)]
    assert [line.position for line in in_position_order(lines)] == [(5, 0), (5, 1)]


def test_the_worker_collects_less_often_and_freezes_what_start_up_built() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
