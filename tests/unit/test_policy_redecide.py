"""Re-deciding a budget's policy after its configuration changed (review B, findings 2, 4, 8).

- A milder policy is a replay only under the same budget revision: relaxing demotion (a later
  `degrade.start_percent`, no `degrade`) takes effect on the next charge.
- A decision made under an older revision never replaces one of a newer revision.
- A policy decided under an earlier revision is due for a re-decision, once per revision (the
  reset timer's rule), so a hard-stopped budget, which gets no traffic, is lifted by itself.
- The timer decides no earlier than the policy in force, which a charge may have stamped ahead
  of the timer's clock, and marks a revision (or a moved tenant) done only once its decision was
  published or changed nothing (review 3A, finding 1).
- A charge for a budget retired while it was in flight is folded, and decides no policy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired, BudgetSpec
from schemas.charges import BudgetCharged
from schemas.codec import decode, encode
from schemas.signals import PolicyChanged
from streams.budgets import Budget
from streams.faust.agents import Pipeline
from streams.faust.charging import Charger, ForecastHooks, StoredLedger
from streams.faust.policy_publishing import policy_event, should_publish
from streams.ledger import LedgerState
from streams.periods import to_ms

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
BASE: dict[str, Any] = {
    "name": "search",
    "limits": {"total_tokens": 1000},
    "at_limit": "hard_stop",
    "degrade": {"target_model": "mini", "start_percent": 90},
}


def _budget(revision: int, **changes: Any) -> Budget:
    spec = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    return Budget("acme/search", "acme", revision, BudgetSpec.model_validate(spec))


class Topic:
    """What the policies topic holds for the budget (the latest published policy)."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None

    def charger(self) -> Charger:
        return Charger(timedelta(days=2), lambda key: False, lambda budget_id: self.latest)

    def charge(
        self, stored: StoredLedger, budget: Budget, offset: int, tokens: int, at: datetime
    ) -> tuple[StoredLedger, list[dict[str, Any]]]:
        charge = BudgetCharged(
            budget_id=budget.budget_id,
            tenant=budget.tenant,
            source_partition=0,
            lines=[[offset, 0, to_ms(at), tokens, 0]],
        )
        outcome = self.charger().charge(stored, budget, charge)
        for policy in outcome.policies:
            self.latest = policy
        return outcome.stored, outcome.policies


def _demoted() -> tuple[Topic, StoredLedger]:
    topic = Topic()
    stored, published = topic.charge(StoredLedger(LedgerState("acme/search")), _budget(1),
                                     1, 920, AT)  # fmt: skip
    assert [p["policy"] for p in published] == ["degrade_route"]
    return topic, stored


def test_a_later_demotion_start_lifts_the_demotion_on_the_next_charge() -> None:
    topic, stored = _demoted()
    relaxed = _budget(2, degrade={"target_model": "mini", "start_percent": 95})
    _, published = topic.charge(stored, relaxed, 2, 1, AT + timedelta(minutes=1))
    assert [(p["policy"], p["budget_revision"]) for p in published] == [("allow", 2)]


def test_removing_demotion_lifts_it_on_the_next_charge() -> None:
    topic, stored = _demoted()
    _, published = topic.charge(stored, _budget(2, degrade=None), 2, 1, AT + timedelta(minutes=1))
    assert [p["policy"] for p in published] == ["allow"]


def _wire(policy: str, revision: int | None, **changes: Any) -> dict[str, Any]:
    wire = {
        "policy": policy, "reason": "", "period_key": "2026-11", "limit": 1000,
        "effective_at": "2026-11-20T10:00:00Z", "reset_at": "2026-12-01T00:00:00Z",
        "target_model": "mini" if policy == "degrade_route" else None, "model_map": {},
        "concise_prompt": False, "cache_ttl_seconds": None, "at_limit": "hard_stop",
        "budget_revision": revision,
    }  # fmt: skip
    return {**wire, **changes}


def test_a_milder_policy_is_a_replay_only_under_the_same_revision() -> None:
    later = "2026-11-20T11:00:00Z"
    current = _wire("degrade_route", 3)
    assert not should_publish(current, _wire("allow", 3, effective_at=later))
    assert should_publish(current, _wire("allow", 4, effective_at=later))
    # A policy written before revisions were recorded: the same configuration, as before.
    assert not should_publish(_wire("degrade_route", None), _wire("allow", 4, effective_at=later))


def test_a_decision_under_an_older_revision_never_replaces_a_newer_one() -> None:
    later = "2026-11-20T11:00:00Z"
    lifted = _wire("allow", 4, limit=100_000)
    assert not should_publish(lifted, _wire("hard_stop", 3, effective_at=later))
    assert should_publish(lifted, _wire("hard_stop", 4, effective_at=later, limit=100_000))


def test_the_reset_timer_re_decides_an_amended_budget_once_per_revision() -> None:
    from streams.faust.policy_publishing import redecision_due

    stop = _wire("hard_stop", 1)  # resets on 1 December, tenant "acme" moved nothing
    assert not redecision_due(stop, _budget(1), AT)
    assert redecision_due(stop, _budget(2), AT)  # amended since: a raised limit lifts it
    assert not redecision_due(stop, _budget(2), AT, redecided=2)  # done, nothing changed
    assert redecision_due(stop, _budget(3), AT, redecided=2)
    assert redecision_due(_wire("allow", 1), _budget(2), AT)  # a lowered limit stops it
    assert redecision_due(_wire("hard_stop", None), _budget(1), AT)  # written by an older build
    # The reasons it had before: the period's reset passed, or allocation moved the tenant.
    assert redecision_due(stop, _budget(1), datetime(2026, 12, 1, tzinfo=UTC))
    assert redecision_due(stop | {"tenant": "acme"}, _budget(1), AT, touched={"acme"})
    assert not redecision_due(_wire("allow", 1), _budget(1), datetime(2026, 12, 2, tzinfo=UTC))


def test_the_policy_event_carries_its_revision_and_old_events_stay_readable() -> None:
    old = {k: v for k, v in _wire("hard_stop", None).items() if k != "budget_revision"}
    old |= {"type": "PolicyChanged", "version": 1, "tenant": "acme", "budget_id": "acme/search",
            "target_model": None}  # fmt: skip
    event = decode(orjson.dumps(old))
    assert isinstance(event, PolicyChanged) and event.budget_revision is None
    new = decode(encode(event.model_copy(update={"budget_revision": 7})))
    assert isinstance(new, PolicyChanged) and new.budget_revision == 7


def test_a_charge_of_a_retired_budget_is_folded_and_decides_no_policy() -> None:
    topic = Topic()
    retired = Budget("acme/search", "acme", 2, _budget(1).spec, retired=True)
    stored, published = topic.charge(StoredLedger(LedgerState("acme/search")), retired,
                                     1, 1200, AT)  # fmt: skip
    assert stored.state.periods["2026-11"].total == 1200
    assert published == []


def _config(event: Any) -> bytes:
    return encode(event)


def test_the_budget_view_keeps_a_retired_budget_it_read_the_spec_of() -> None:
    from streams.faust.tables import BudgetView

    spec = _budget(1).spec
    common = {"budget_id": "acme/search", "tenant": "acme", "occurred_at": AT, "actor": "t"}
    defined = _config(BudgetDefined(revision=1, spec=spec, **common))
    amended = _config(
        BudgetAmended(revision=2, spec=spec.model_copy(update={"name": "s2"}), **common)
    )
    retired = _config(BudgetRetired(revision=3, **common))
    view = BudgetView()
    view.table = SimpleNamespace(values=lambda: [retired])
    for raw in (defined, amended, retired):
        view.remember(raw)
    found = view.find("acme/search")
    assert found is not None and found.retired and found.revision == 3
    assert found.spec.name == "s2"
    assert view.index().get("acme/search") is None  # resolve still charges live budgets only

    compacted = BudgetView()  # only the retirement left on the topic: nothing to fold into
    compacted.table = SimpleNamespace(values=lambda: [retired])
    compacted.remember(retired)
    assert compacted.find("acme/search") is None


AHEAD = AT + timedelta(minutes=1)  # a stop decided at an event time ahead of the timer's clock


def _stopped_ahead() -> StoredLedger:
    """A hard stop at 1000 tokens, charged at an event time one minute ahead of `AT`."""
    topic = Topic()
    stored, published = topic.charge(StoredLedger(LedgerState("acme/search")), _budget(1),
                                     1, 1000, AHEAD)  # fmt: skip
    assert [(p["policy"], p["effective_at"]) for p in published] == [
        ("hard_stop", AHEAD.isoformat().replace("+00:00", "Z"))
    ]
    return stored


def test_the_timer_decides_no_earlier_than_a_policy_stamped_ahead_of_its_clock() -> None:
    from streams.faust.policy_publishing import timer_instant, timer_settled

    state = _stopped_ahead().state
    stop = policy_event(_budget(1), state, AHEAD)
    raised = _budget(2, limits={"total_tokens": 100_000})
    # At the timer's own clock the decision is older than the stop: refused (review 3A, 1).
    assert not should_publish(stop, policy_event(raised, state, AT))
    at = timer_instant(stop, AT)
    assert at == AHEAD + timedelta(milliseconds=1)
    lifted = policy_event(raised, state, at)
    assert lifted["policy"] == "allow" and should_publish(stop, lifted)
    assert timer_settled(stop, lifted)
    assert timer_instant(stop, AHEAD + timedelta(hours=1)) == AHEAD + timedelta(hours=1)
    # Nothing the proxy sees changed: settled, nothing to publish.
    assert timer_settled(stop, policy_event(_budget(2, name="renamed"), state, at))
    # Refused for delivery's sake (this worker's budget table behind the topic's revision):
    # not settled, tried again.
    newer = stop | {"budget_revision": 3}
    assert not timer_settled(newer, lifted)
    # Over a policy an older build wrote (no revision), a milder decision is refused as a
    # replay; that is final, not retried on every tick for the rest of the period (review 4).
    legacy = {k: v for k, v in stop.items() if k != "budget_revision"}
    milder = lifted | {"limit": legacy["limit"], "at_limit": legacy["at_limit"]}
    assert not should_publish(legacy, milder)
    assert timer_settled(legacy, milder)


def _timer(stored: StoredLedger, policy: dict[str, Any], budget: Budget) -> Any:
    """A `Pipeline` reduced to what `reset_policies` and `redecide` read, on one partition."""
    policies = {b"acme/search": orjson.dumps(policy)}
    pipeline: Any = SimpleNamespace(
        owned_charge_partitions=lambda: {0},
        config=SimpleNamespace(partitions=1),
        tables=SimpleNamespace(
            budget_view=SimpleNamespace(index=lambda: {budget.budget_id: budget}),
            policies=policies,
            ledger={b"acme/search": stored.to_bytes()},
            current_policy=lambda budget_id: orjson.loads(policies[budget_id.encode()]),
        ),
        allocations=SimpleNamespace(touched=set(), limits=lambda budget, at: None),
        charger=SimpleNamespace(forecasts=ForecastHooks()),
        metrics=SimpleNamespace(policies=SimpleNamespace(inc=lambda: None)),
        _redecided={},
    )
    pipeline.redecide = lambda budget, at: Pipeline.redecide(pipeline, budget, at)
    return pipeline


async def test_the_timer_lifts_an_amended_stop_stamped_ahead_and_retries_a_refused_one() -> None:
    stored = _stopped_ahead()
    stop = policy_event(_budget(1), stored.state, AHEAD)
    raised = _budget(2, limits={"total_tokens": 100_000})
    timer = _timer(stored, stop, raised)
    await Pipeline.reset_policies(timer, AT)
    lifted = orjson.loads(timer.tables.policies[b"acme/search"])
    assert (lifted["policy"], lifted["limit"], lifted["budget_revision"]) == ("allow", 100_000, 2)
    assert timer._redecided == {"acme/search": 2}

    # A draw lifts the tenant's stop, but this worker's budget table is behind the topic's
    # revision: the decision is refused, and the tenant stays due for the next tick.
    behind = _timer(stored, stop | {"budget_revision": 2, "tenant": "acme"}, _budget(1))
    behind.allocations.touched = {"acme"}
    behind.allocations.limits = lambda budget, at: {"total_tokens": 100_000}  # a draw
    await Pipeline.reset_policies(behind, AT)
    assert orjson.loads(behind.tables.policies[b"acme/search"])["budget_revision"] == 2
    assert behind.allocations.touched == {"acme"}
    assert behind._redecided == {}
