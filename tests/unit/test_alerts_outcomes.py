"""Outcome events built from a claimed outbox row, and the fold that rebuilds the history."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fakes import alert_events as ev
from hypothesis import given
from hypothesis import strategies as st

from schemas.alerts import MAX_DETAIL, AlertAbandoned, AlertDelivered
from schemas.signals import DeadLettered
from services.alerts.outcomes import Final, fold, outcome_event, row_facts, state_of

ROW = ev.claimed_row()
T0 = ROW.event_at


def test_a_delivered_outcome_carries_the_row_the_route_and_the_reply() -> None:
    at = T0 + timedelta(seconds=10)
    event = outcome_event(ROW, Final(None, "HTTP 202: " + "x" * 5000), at)
    assert isinstance(event, AlertDelivered)
    assert (event.alert_id, event.channel, event.channel_type) == (
        ROW.delivery_id,
        "oncall",
        "pagerduty",
    )
    assert (event.source.topic, event.source.partition, event.source.offset) == (
        "allotment.thresholds",
        4,
        17,
    )
    assert (event.attempts, event.first_attempt_at, event.delivered_at) == (
        3,
        ROW.first_attempt_at,
        at,
    )
    assert len(event.receiver_status) == MAX_DETAIL  # bounded, never rejected
    assert state_of(event) == "delivered" == Final(None, "").state


def test_an_abandoned_outcome_says_why_and_names_a_source_type_for_old_rows() -> None:
    old = replace(
        ROW, source_type=None, source_topic=None, source_partition=None, source_offset=None
    )
    event = outcome_event(old, Final("attempts_exhausted", ""), T0 + timedelta(seconds=10))
    assert isinstance(event, AlertAbandoned)
    assert (event.reason, event.error) == ("attempts_exhausted", "(no error text)")
    assert (event.source.type, event.source.topic) == ("ThresholdCrossed", None)
    assert state_of(event) == "failed" == Final("rejected", "x").state


def _outcome(n: int, delivered: bool, attempt_offset: int) -> AlertDelivered | AlertAbandoned:
    row = replace(
        ROW,
        delivery_id=f"3f0b5a52-6f7e-5d3a-9c1b-2a4e6f8d0b{n:02x}",
        last_attempt_at=ROW.first_attempt_at + timedelta(seconds=attempt_offset),
    )
    final = Final(None, "HTTP 200") if delivered else Final("rejected", "HTTP 400")
    return outcome_event(row, final, row.last_attempt_at + timedelta(seconds=1))


def test_the_latest_attempt_wins_also_when_a_stale_outcome_comes_later() -> None:
    rejected, resent = _outcome(1, False, 5), _outcome(1, True, 60)
    assert fold([rejected, resent]) == {resent.alert_id: resent}
    # a worker whose lease ran out published after its successor: its outcome is not current
    assert fold([resent, rejected]) == {resent.alert_id: resent}
    assert fold([DeadLettered.model_construct()], fold([resent])) == {resent.alert_id: resent}


outcomes = st.lists(
    st.builds(_outcome, st.integers(0, 5), st.booleans(), st.integers(0, 100)), max_size=20
)


@given(outcomes)
def test_folding_is_idempotent_and_incremental(
    events: list[AlertDelivered | AlertAbandoned],
) -> None:
    whole = fold(events)
    assert fold(events + events) == whole  # a replayed or repeated log changes nothing
    half = len(events) // 2
    assert fold(events[half:], fold(events[:half])) == whole  # resume from a snapshot
    for alert_id, event in whole.items():
        latest = max(e.last_attempt_at for e in events if e.alert_id == alert_id)
        assert event.last_attempt_at == latest


def test_an_outcome_settles_the_outbox_columns_the_delivery_loop_would() -> None:
    delivered, rejected = _outcome(1, True, 5), _outcome(2, False, 7)
    assert isinstance(delivered, AlertDelivered) and isinstance(rejected, AlertAbandoned)
    times = {"first_attempt_at": ROW.first_attempt_at, "attempts": ROW.attempts}
    assert row_facts(delivered) == {
        "state": "delivered",
        "last_attempt_at": delivered.last_attempt_at,
        "delivered_at": delivered.delivered_at,
        "last_error": None,  # as mark_delivered leaves it
        **times,
    }
    assert row_facts(rejected) == {
        "state": "failed",
        "last_attempt_at": rejected.last_attempt_at,
        "delivered_at": None,
        "last_error": "HTTP 400",  # as mark_failed records it
        **times,
    }
