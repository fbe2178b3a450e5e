"""Usage stamped far in the future (a gateway's bad clock, a typo in a backfill file).

Review B, finding 1: the ledger's "now" is the newest event time it has applied, so one event a
year ahead pruned the current period and its fired thresholds, and every real event after it
was counted late: no threshold and no hard stop for that budget again. Two thresholds now:
absurd times are refused (occurred_at more than `MAX_AHEAD`, a day, after received_at: a 4xx at
ingest, a dead letter in the worker; or after the record's broker time: a dead letter), and the
ledger fold caps "now" at a caller's trusted time (the charge record's time + `CLOCK_SKEW`), so
a gateway a few minutes fast is charged, to its own period, without moving "now" past the cap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from schemas import usage as usage_schema
from schemas.base import field_errors
from schemas.budgets import BudgetDefined, BudgetSpec
from schemas.usage import UsageRecorded, usage_fields
from services.common.kafka import partition_for
from services.ingest.batch import map_records
from services.ingest.keys import IngestKey
from services.ingest.sources import native
from streams.budgets import Budget, BudgetIndex
from streams.faust.app import InvalidWorkerConfig, WorkerConfig
from streams.faust.dedupe_log import MemoryDedupeIndex
from streams.faust.resolve import Resolver, UsageRecord
from streams.ledger import ChargeLine, LedgerState, apply_charge
from streams.periods import to_ms

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
LATE = timedelta(days=2)
YEAR = timedelta(days=365)
CLOCK_SKEW = timedelta(minutes=5)
MAX_AHEAD = timedelta(days=1)  # schemas.usage.MAX_AHEAD (checked below)
FAST = timedelta(minutes=10)  # a gateway's clock a little fast: real, billed usage
DAY_RULE = "must not be more than 1 day, 0:00:00 after"
BUDGET = Budget(
    "b1", "acme", 1, BudgetSpec(name="b", limits={"total_tokens": 1000}, at_limit="hard_stop")
)


def _line(offset: int, at: datetime, tokens: int) -> ChargeLine:
    return ChargeLine((offset, 0), to_ms(at), tokens, tokens)


def test_a_line_past_the_trusted_time_keeps_the_current_period_charging() -> None:
    trusted = to_ms(NOW + CLOCK_SKEW)
    first = apply_charge(
        LedgerState("b1"), BUDGET, 0, [_line(1, NOW, 400)], LATE, newest_trusted_ms=trusted
    )
    assert first.state.crossed == {"2026-11": [75]}

    future = apply_charge(
        first.state, BUDGET, 0, [_line(2, NOW + YEAR, 1)], LATE, newest_trusted_ms=trusted
    )
    # Charged to the period it names (nothing accepted is lost); "now" stops at the trusted time.
    assert future.applied == 1
    assert future.state.periods["2027-11"].total == 2
    assert future.state.periods["2026-11"].total == 800
    assert future.state.crossed["2026-11"] == [75]
    assert future.state.event_time_high_ms == trusted

    later = NOW + timedelta(minutes=5)
    real = [_line(3 + i, NOW + timedelta(minutes=i), 500) for i in range(5)]
    result = apply_charge(
        future.state, BUDGET, 0, real, LATE, newest_trusted_ms=to_ms(later + CLOCK_SKEW)
    )
    assert (result.applied, result.late) == (5, [])
    assert result.state.periods["2026-11"].total == 800 + 5_000
    assert [(c.period_key, c.threshold) for c in result.crossings] == [
        ("2026-11", 90),
        ("2026-11", 100),
    ]
    assert result.state.event_time_high_ms == trusted


def test_now_never_moves_back_under_a_cap() -> None:
    ahead = LedgerState("b1", event_time_high_ms=to_ms(NOW + timedelta(hours=1)))
    result = apply_charge(ahead, BUDGET, 0, [_line(1, NOW, 1)], LATE, newest_trusted_ms=to_ms(NOW))
    assert result.state.event_time_high_ms == to_ms(NOW + timedelta(hours=1))
    assert result.applied == 1


def _wire(event_id: str, occurred_at: datetime, received_at: datetime) -> dict[str, Any]:
    return {
        "type": "UsageRecorded", "version": 1, "event_id": event_id, "source": "gw",
        "occurred_at": occurred_at.isoformat(), "received_at": received_at.isoformat(),
        "tenant": "acme", "input_uncached": 10, "output": 1,
    }  # fmt: skip


def test_the_contract_refuses_only_an_absurd_occurred_at() -> None:
    for ahead in (FAST, MAX_AHEAD):  # a fast clock, and the edge of the rule
        valid = _wire("e1", NOW + ahead, NOW)
        assert UsageRecorded.model_validate(valid).occurred_at == NOW + ahead
        assert usage_fields(valid) is not None
    assert UsageRecorded.model_validate(_wire("e2", NOW - YEAR, NOW)).received_at == NOW

    for ahead, shown in ((YEAR, "365 days"), (MAX_AHEAD + timedelta(seconds=1), "0:00:01")):
        bad = _wire("e3", NOW + ahead, NOW)
        assert usage_fields(bad) is None  # the fast path leaves the reason to the model
        with pytest.raises(ValidationError) as caught:
            UsageRecorded.model_validate(bad)
        [error] = field_errors(caught.value)
        assert error.field == "occurred_at"
        assert f"{DAY_RULE} received_at" in error.rule
        assert shown in error.rule


def test_ingest_rejects_only_an_absurd_record_naming_occurred_at() -> None:
    key = IngestKey("gw", "acme", "0" * 64)
    records = [
        {"source_request_id": "ok", "occurred_at": NOW.isoformat(), "output": 3},
        {"source_request_id": "typo", "occurred_at": (NOW + YEAR).isoformat(), "output": 3},
        {"source_request_id": "fast", "occurred_at": (NOW + FAST).isoformat(), "output": 3},
        {"source_request_id": "month", "occurred_at": (NOW + 2 * MAX_AHEAD).isoformat()},
    ]
    batch = map_records(records, native.to_draft, key, NOW)
    assert batch.indices == [0, 2]
    rejected = [r.to_dict() for r in batch.rejected]
    assert [(r["index"], r["field"]) for r in rejected] == [(1, "occurred_at"), (3, "occurred_at")]
    assert all(r["rule"].startswith(f"{DAY_RULE} received_at") for r in rejected)


def test_the_ledger_cap_is_five_minutes_and_the_rule_a_day() -> None:
    assert getattr(usage_schema, "CLOCK_SKEW", None) == CLOCK_SKEW
    assert getattr(usage_schema, "MAX_AHEAD", None) == MAX_AHEAD


def _resolver(**kw: Any) -> Resolver:
    spec = BudgetSpec.model_validate({"name": "all", "limits": {"total_tokens": 1000}})
    defined = BudgetDefined(
        budget_id="all", tenant="acme", revision=1, occurred_at=NOW, actor="t", spec=spec
    )
    index = BudgetIndex([Budget(defined.budget_id, "acme", 1, defined.spec)])
    return Resolver("p.usage", 1, MemoryDedupeIndex(7 * 86_400_000), lambda: index, **kw)


def _envelope(offset: int, events: list[dict[str, Any]]) -> UsageRecord:
    value = orjson.dumps({"type": "UsageBatch", "version": 1, "events": events})
    return UsageRecord(0, offset, to_ms(NOW), value)


def _lines(out: Any) -> list[list[int]]:
    [(_, raw)] = out.charges
    return [row[:3] for row in orjson.loads(raw)["lines"]]


def test_resolve_dead_letters_an_event_ahead_of_its_received_at() -> None:
    events = [_wire("ok-1", NOW, NOW), _wire("typo", NOW + YEAR, NOW), _wire("ok-2", NOW, NOW)]
    assert {partition_for(e["event_id"], 1) for e in events} == {0}
    resolver = _resolver()
    out = resolver.resolve([_envelope(7, events)])

    [rejected] = out.rejected
    assert (rejected.topic, rejected.offset, rejected.index) == ("p.usage", 7, 1)
    assert rejected.errors[0].startswith(f"occurred_at: {DAY_RULE} received_at")
    assert orjson.loads(rejected.payload)["event_id"] == "typo"
    assert _lines(out) == [[7, 0, to_ms(NOW)], [7, 2, to_ms(NOW)]]

    # Not remembered as seen: sent again with its clock fixed, the event is charged.
    resolver.keep(out)
    again = resolver.resolve([_envelope(8, [_wire("typo", NOW, NOW)])])
    assert (again.duplicates, again.rejected, _lines(again)) == (0, [], [[8, 0, to_ms(NOW)]])


def test_resolve_dead_letters_an_event_ahead_of_its_broker_time() -> None:
    events = [
        _wire("forged", NOW + YEAR, NOW + YEAR),  # received_at as wrong: the broker time says so
        _wire("ok-2", NOW + MAX_AHEAD, NOW + MAX_AHEAD),  # at the edge of the rule
        _wire("days", NOW + 2 * MAX_AHEAD, NOW + 2 * MAX_AHEAD),
    ]
    out = _resolver(broker_times=True).resolve([_envelope(3, events)])
    assert [r.index for r in out.rejected] == [0, 2]
    for rejected in out.rejected:
        assert rejected.errors[0].startswith(
            f"occurred_at: {DAY_RULE} the time the broker stored the record"
        )
    assert "2 days, 0:00:00 after it" in out.rejected[1].errors[0]
    assert _lines(out) == [[3, 1, to_ms(NOW + MAX_AHEAD)]]

    unchecked = _resolver().resolve([_envelope(3, events)])  # no broker times: the contract only
    assert (unchecked.rejected, len(_lines(unchecked))) == ([], 3)


def test_an_event_from_a_fast_clock_is_charged_and_now_stops_at_the_cap() -> None:
    """Review of the fix: a gateway 10 minutes fast had all its real usage refused (a 4xx at
    ingest, which most gateways do not retry). It is accepted at ingest, charged by the
    worker at its own time, and the ledger's "now" still runs at most the cap ahead."""
    key = IngestKey("gw", "acme", "0" * 64)
    fast = {"source_request_id": "fast", "occurred_at": (NOW + FAST).isoformat(), "output": 3}
    batch = map_records([fast], native.to_draft, key, NOW)
    assert (batch.indices, batch.rejected) == ([0], [])
    [event] = batch.events
    assert (event.occurred_at, event.received_at) == (NOW + FAST, NOW)

    out = _resolver(broker_times=True).resolve([_envelope(5, [event.to_wire()])])
    assert out.rejected == []
    [[offset, index, at_ms]] = _lines(out)
    assert (offset, index, at_ms) == (5, 0, to_ms(NOW + FAST))

    trusted = to_ms(NOW + CLOCK_SKEW)  # the charge record's time (NOW) + the cap
    result = apply_charge(
        LedgerState("b1"), BUDGET, 0, [_line(5, NOW + FAST, 3)], LATE, newest_trusted_ms=trusted
    )
    assert result.applied == 1
    assert result.state.periods["2026-11"].total == 6
    assert result.state.event_time_high_ms == trusted < to_ms(NOW + FAST)


def test_a_negative_clock_skew_is_refused_naming_it(tmp_path: Path) -> None:
    config = WorkerConfig(
        bootstrap="b", topic_prefix="p", store_dir=tmp_path, clock_skew=-CLOCK_SKEW
    )
    with pytest.raises(InvalidWorkerConfig, match="clock_skew: must not be negative"):
        config.validate()


@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
    ],
)
def test_a_zero_or_mistyped_occurred_at_is_refused_naming_it(occurred_at: datetime) -> None:
    """Review: year 1 passed ingest and the contract, then the ledger's period arithmetic for
    a zone west of UTC raised OverflowError, and the worker crashed on it again and again."""
    bad = _wire("e-old", occurred_at, NOW)
    assert usage_fields(bad) is None
    with pytest.raises(ValidationError) as caught:
        UsageRecorded.model_validate(bad)
    [error] = field_errors(caught.value)
    assert (error.field, error.rule) == (
        "occurred_at", "must not be before 2000-01-01T00:00:00+00:00 (a zero or mistyped timestamp)"
    )  # fmt: skip
    out = _resolver(broker_times=True).resolve([_envelope(3, [bad, _wire("e-ok", NOW, NOW)])])
    assert [r.index for r in out.rejected] == [0]
    assert len(_lines(out)) == 1
    assert UsageRecorded.model_validate(_wire("e-2000", datetime(2000, 1, 1, tzinfo=UTC), NOW))


def test_a_crossing_in_the_next_period_is_dated_at_its_start_not_before() -> None:
    """Review: a line stamped into tomorrow (a clock 20 h fast, under MAX_AHEAD) crossed
    tomorrow's 100%; dated at the cap (today), its crossing judged today's traffic at the
    proxy. Dated at tomorrow's start, it takes effect when tomorrow does."""
    daily = Budget(
        "d1", "acme", 1,
        BudgetSpec(name="d", limits={"total_tokens": 1000}, at_limit="hard_stop",
                   period={"kind": "day", "timezone": "UTC"}),
    )  # fmt: skip
    late_evening = datetime(2026, 11, 20, 22, tzinfo=UTC)
    ahead = late_evening + timedelta(hours=20)  # tomorrow, 18:00
    result = apply_charge(
        LedgerState("d1"), daily, 0, [_line(1, ahead, 500)], LATE,
        newest_trusted_ms=to_ms(late_evening + CLOCK_SKEW),
    )  # fmt: skip
    assert {c.period_key for c in result.crossings} == {"2026-11-21"}
    assert {c.crossed_at_ms for c in result.crossings} == {
        to_ms(datetime(2026, 11, 21, tzinfo=UTC))
    }
