"""The Charger without a broker: effective limits reach the fold, the crossings and the policy."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.allocation import OverflowDrawn
from schemas.budgets import BudgetDefined, BudgetSpec, Metric
from schemas.charges import BudgetCharged
from streams.allocation import AllocationBook
from streams.budgets import Budget
from streams.faust.charging import Charger, ForecastHooks, StoredLedger
from streams.faust.policy_publishing import should_publish
from streams.periods import to_ms

AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _budget(spec: dict[str, Any]) -> Budget:
    event = BudgetDefined(
        budget_id="acme/search", tenant="acme", revision=1, occurred_at=AT, actor="t",
        spec=BudgetSpec.model_validate({"name": "search", **spec}),
    )  # fmt: skip
    return Budget(event.budget_id, event.tenant, event.revision, event.spec)


def _charge(budget: Budget, rows: list[tuple[int, datetime, int]]) -> BudgetCharged:
    return BudgetCharged(
        budget_id=budget.budget_id,
        tenant=budget.tenant,
        source_partition=0,
        lines=[[offset, 0, to_ms(at), tokens, 0] for offset, at, tokens in rows],
    )


def _charger(limits: Any = None) -> Charger:
    if limits is None:
        return Charger(timedelta(days=2), lambda key: False, lambda budget_id: None)
    return Charger(timedelta(days=2), lambda key: False, lambda budget_id: None, limits)


def test_without_allocation_the_spec_limit_is_both_limit_and_effective_limit() -> None:
    budget = _budget({"limits": {"total_tokens": 1000}, "at_limit": "hard_stop"})
    outcome = _charger().charge(
        StoredLedger.from_bytes(None, budget.budget_id), budget, _charge(budget, [(1, AT, 1000)])
    )
    assert [(t["threshold"], t["limit"], t["effective_limit"]) for t in outcome.thresholds] == [
        (75, 1000, 1000), (90, 1000, 1000), (100, 1000, 1000),
    ]  # fmt: skip
    assert outcome.policies[-1]["policy"] == "hard_stop"


def test_a_raised_effective_limit_moves_the_crossings_and_the_policy() -> None:
    budget = _budget({"limits": {"total_tokens": 1000}, "at_limit": "hard_stop"})

    def limits(b: Budget, at: datetime) -> Mapping[Metric, int]:
        return {"total": 2000}

    charger = _charger(limits)
    stored = StoredLedger.from_bytes(None, budget.budget_id)
    outcome = charger.charge(stored, budget, _charge(budget, [(1, AT, 1600)]))
    assert [(t["threshold"], t["limit"], t["effective_limit"]) for t in outcome.thresholds] == [
        (75, 1000, 2000)
    ]
    assert [p["policy"] for p in outcome.policies] == []  # 80% of the effective line: allow
    outcome = charger.charge(outcome.stored, budget, _charge(budget, [(2, AT, 400)]))
    # (nothing reaches the thresholds topic here, so the 75 is still unsent)
    assert [t["threshold"] for t in outcome.thresholds] == [75, 90, 100]
    assert (outcome.policies[-1]["policy"], outcome.policies[-1]["limit"]) == ("hard_stop", 2000)


def test_each_period_of_a_charge_is_held_to_its_own_effective_limit() -> None:
    budget = _budget({"limits": {"total_tokens": 1000}, "thresholds": [100]})
    book = AllocationBook()
    book.apply(
        OverflowDrawn(
            tenant="acme", occurred_at=AT, actor="t", draw_id="d1", budget_id=budget.budget_id,
            parent_id="acme/org", period_key="2026-11", tokens=1000,
        )
    )  # fmt: skip

    def limits(b: Budget, at: datetime) -> Mapping[Metric, int]:
        return book.limits_at({b.budget_id: b.spec}, b.tenant, b.budget_id, at)

    october = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    november = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
    charge = _charge(budget, [(1, october, 1000), (2, november, 1000)])
    outcome = _charger(limits).charge(
        StoredLedger.from_bytes(None, budget.budget_id), budget, charge
    )
    # October had no draw: 1000 reaches its line. November's line is 2000: 1000 does not.
    assert [(t["period_key"], t["effective_limit"]) for t in outcome.thresholds] == [
        ("2026-10", 1000)
    ]
    assert outcome.applied == 2


def test_forecast_hooks_complete_new_crossings_and_demote_on_a_projected_overrun() -> None:
    budget = _budget({
        "limits": {"total_tokens": 1000},
        "degrade": {"target_model": "mini", "on_projected_overrun": True},
    })  # fmt: skip
    asked: list[tuple[str, str, str, int]] = []

    def fields(budget_id: str, period_key: str, metric: Metric, limit: int) -> dict[str, Any]:
        asked.append((budget_id, period_key, metric, limit))
        return {"recommended_action": "projected 20% over"}

    announced: set[str] = set()
    charger = _charger()
    charger.forecasts = ForecastHooks(lambda b, key: key in announced, fields)
    stored = StoredLedger.from_bytes(None, budget.budget_id)
    outcome = charger.charge(stored, budget, _charge(budget, [(1, AT, 760)]))
    assert outcome.stored.crossings["2026-11|75"]["recommended_action"] == "projected 20% over"
    assert asked == [(budget.budget_id, "2026-11", "total", 1000)]
    assert outcome.policies == []  # 76%, no overrun announced: allow

    announced.add("2026-11")
    outcome = charger.charge(outcome.stored, budget, _charge(budget, [(2, AT, 10)]))
    assert len(asked) == 1  # no new crossing: the stored one is not completed again
    assert [(p["policy"], p["target_model"]) for p in outcome.policies] == [
        ("degrade_route", "mini")
    ]


def test_a_change_the_proxy_sees_is_published_by_the_domain_rule() -> None:
    def degrade(**changes: Any) -> dict[str, Any]:
        wire = {
            "policy": "degrade_route", "reason": "", "period_key": "2026-11", "limit": 1000,
            "effective_at": "2026-11-20T10:00:00Z", "reset_at": "2026-12-01T00:00:00Z",
            "target_model": "mini", "model_map": {}, "concise_prompt": False,
            "cache_ttl_seconds": None, "at_limit": "alert_only",
        }  # fmt: skip
        return {**wire, **changes}

    current = degrade()
    assert not should_publish(current, degrade(effective_at="2026-11-20T11:00:00Z"))
    # What the dict comparison of the pipeline used to miss: the proxy behaves differently.
    assert should_publish(current, degrade(concise_prompt=True))
    assert should_publish(current, degrade(cache_ttl_seconds=300))
    assert should_publish(current, degrade(reset_at="2026-11-21T00:00:00Z"))
    # An amended at-limit action is a change, not a replay passing an earlier point.
    stop = degrade(policy="hard_stop", at_limit="hard_stop")
    assert should_publish(stop, degrade(effective_at="2026-11-20T11:00:00Z"))


def test_the_outcome_hands_on_the_lines_as_folded_in_position_order() -> None:
    """What the ledger agent passes to the forecast's history (`ForecastHooks.track`)."""
    budget = _budget({"limits": {"total_tokens": 1000}})
    charge = _charge(budget, [(3, AT, 10), (1, AT, 20), (2, AT, 30)])
    outcome = _charger().charge(StoredLedger.from_bytes(None, budget.budget_id), budget, charge)
    assert [(line.position, line.input) for line in outcome.lines] == [
        ((1, 0), 20), ((2, 0), 30), ((3, 0), 10),
    ]  # fmt: skip
    assert outcome.applied == 3


def test_a_line_stamped_hours_ahead_cannot_date_a_policy_ahead_of_the_real_stop() -> None:
    """Review: a gateway 20 h fast (accepted: under MAX_AHEAD) made a 90% crossing, and its
    degrade policy, dated 20 h ahead; the real 100% crossing an hour later was then older than
    the policy in force and never published. Crossings are dated no later than the cap."""
    budget = _budget({"limits": {"total_tokens": 1000}, "at_limit": "hard_stop",
                      "degrade": {"target_model": "small"}})  # fmt: skip
    topic: dict[str, dict[str, Any]] = {}
    charger = Charger(timedelta(days=2), lambda key: False, topic.get)
    stored = StoredLedger.from_bytes(None, budget.budget_id)
    skew = timedelta(minutes=5)
    for record_at, rows in (
        (AT, [(1, AT + timedelta(hours=20), 900)]),  # 90%, from a fast clock
        (AT + timedelta(hours=1), [(2, AT + timedelta(hours=1), 200)]),  # 110%, real time
    ):
        outcome = charger.charge(stored, budget, _charge(budget, rows), to_ms(record_at + skew))
        stored = outcome.stored
        for policy in outcome.policies:
            topic[budget.budget_id] = policy
    crossed = {t["threshold"]: t["crossed_at"] for t in outcome.thresholds}
    capped = "2026-11-20T09:05:00Z"  # the first record's time plus the skew, not 20 h ahead
    assert crossed == {75: capped, 90: capped, 100: "2026-11-20T10:00:00Z"}
    in_force = topic[budget.budget_id]
    assert (in_force["policy"], in_force["effective_at"]) == ("hard_stop", "2026-11-20T10:00:00Z")
