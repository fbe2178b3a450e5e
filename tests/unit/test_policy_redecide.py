"""Re-deciding a budget's policy after its configuration changed (review B, findings 2, 4, 8).

- A milder policy is a replay only under the same budget revision: relaxing demotion (a later
  `degrade.start_percent`, no `degrade`) takes effect on the next charge.
- A decision made under an older revision never replaces one of a newer revision.
- A policy decided under an earlier revision is due for a re-decision, once per revision (the
  reset timer's rule), so a hard-stopped budget, which gets no traffic, is lifted by itself.
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
from streams.faust.charging import Charger, StoredLedger, should_publish
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
    from streams.faust.charging import redecision_due

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
