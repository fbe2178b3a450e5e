"""The proxy's policy cache: matching, the winning policy, and the overshoot bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired, BudgetSpec
from schemas.signals import PolicyChanged, ThresholdCrossed
from services.proxy.enforcement import PolicyCache
from services.proxy.keys import VirtualKey

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
RESET = datetime(2026, 12, 1, tzinfo=UTC)
KEY = VirtualKey("bot", "acme", team="support", feature="copilot")


def budget(budget_id: str, revision: int = 1, kind: type = BudgetDefined, **spec: Any) -> Any:
    fields: dict[str, Any] = {"name": budget_id, "limits": {"total_tokens": 1000}, **spec}
    return kind(
        budget_id=budget_id,
        tenant="acme",
        revision=revision,
        occurred_at=NOW,
        actor="t",
        spec=BudgetSpec.model_validate(fields),
    )


def policy(
    budget_id: str,
    policy: str = "allow",
    at_limit: str = "hard_stop",
    consumed: int = 0,
    limit: int = 1000,
    **extra: Any,
) -> PolicyChanged:
    return PolicyChanged(
        tenant="acme",
        budget_id=budget_id,
        period_key="2026-11",
        policy=policy,
        at_limit=at_limit,
        reason="test",
        effective_at=NOW - timedelta(minutes=1),
        reset_at=RESET,
        metric="total",
        consumed=consumed,
        limit=limit,
        remaining=max(0, limit - consumed),
        **extra,
    )


def cache_with(*events: Any) -> PolicyCache:
    cache = PolicyCache(clock=NOW.timestamp)
    for event in events:
        if isinstance(event, PolicyChanged):
            cache.apply_policy(event)
        else:
            cache.apply_budget(event)
    return cache


def decide(
    cache: PolicyCache,
    model: str = "gpt-4o",
    est_in: int = 10,
    est_out: int = 10,
    key: VirtualKey = KEY,
) -> Any:
    matched = cache.matched(key, key.feature, (), model, "openai")
    return cache.decide(matched, est_in, est_out, NOW_MS)


def test_no_budget_or_no_policy_yet_means_allow() -> None:
    assert decide(PolicyCache()).policy == "allow"
    assert decide(cache_with(budget("b1"))).policy == "allow"


def test_only_budgets_whose_selector_matches_apply() -> None:
    cache = cache_with(
        budget("other-team", selector={"team": ["sales"]}),
        policy("other-team", "hard_stop", consumed=1000),
        budget("gpt", selector={"model": ["gpt-4o"]}),
        policy("gpt", "degrade_route", target_model="gpt-4o-mini", consumed=950),
    )
    verdict = decide(cache)
    assert verdict.policy == "degrade_route"
    assert verdict.target_model("gpt-4o") == "gpt-4o-mini"
    assert decide(cache, model="claude").policy == "allow"


def test_most_restrictive_wins_and_names_its_budget() -> None:
    cache = cache_with(
        budget("a"),
        policy("a", "degrade_route", target_model="m", consumed=900),
        budget("b"),
        policy("b", "hard_stop", consumed=1000),
    )
    verdict = decide(cache)
    assert verdict.policy == "hard_stop"
    assert verdict.winner is not None and verdict.winner.budget_id == "b"


def test_model_map_takes_precedence_over_the_target() -> None:
    cache = cache_with(
        budget("a"),
        policy(
            "a",
            "degrade_route",
            at_limit="degrade_route",
            target_model="small",
            model_map={"big": "medium"},
        ),
    )
    verdict = decide(cache, model="big")
    assert verdict.target_model("big") == "medium"
    assert verdict.target_model("other") == "small"


def test_a_budget_change_invalidates_memoised_matches() -> None:
    cache = cache_with(budget("a", selector={"team": ["sales"]}), policy("a", "hard_stop"))
    assert decide(cache).policy == "allow"
    cache.apply_budget(budget("a", revision=2, kind=BudgetAmended))
    assert decide(cache).policy == "hard_stop"
    cache.apply_budget(
        BudgetRetired(budget_id="a", tenant="acme", revision=3, occurred_at=NOW, actor="t")
    )
    assert decide(cache).policy == "allow"


def test_a_lone_amendment_from_the_compacted_topic_defines_the_budget() -> None:
    cache = cache_with(budget("a", revision=4, kind=BudgetAmended), policy("a", "hard_stop"))
    assert decide(cache).policy == "hard_stop"
    cache.apply_budget(budget("a", revision=2, kind=BudgetAmended, selector={"team": ["x"]}))
    assert decide(cache).policy == "hard_stop"  # an older revision never wins


def test_a_policy_lapses_at_its_reset() -> None:
    cache = cache_with(budget("a"), policy("a", "hard_stop", consumed=1000))
    matched = cache.matched(KEY, KEY.feature, (), "m", "openai")
    reset_ms = int(RESET.timestamp() * 1000)
    assert cache.decide(matched, 1, 1, reset_ms - 1).policy == "hard_stop"
    assert cache.decide(matched, 1, 1, reset_ms).policy == "allow"


def test_reservations_refuse_once_headroom_is_used_and_settle_releases_them() -> None:
    cache = cache_with(budget("a"), policy("a", "allow", consumed=950))  # 50 left
    first = decide(cache, est_in=20, est_out=20)
    second = decide(cache, est_in=20, est_out=20)
    assert first.policy == second.policy == "allow"  # 50 - 40 = 10 > 0 when the second asks
    third = decide(cache, est_in=1, est_out=1)
    assert third.policy == "hard_stop" and third.local_stop
    cache.settle(first, 5, 5, NOW_MS)  # used 10 of the 40 it reserved
    cache.settle(second, 5, 5, NOW_MS)
    state = cache.states["a"]
    assert (state.reserved, state.forwarded_sum, state.headroom()) == (0, 20, 30)
    assert decide(cache).policy == "allow"


def test_a_fresh_policy_forgets_what_it_already_counts() -> None:
    cache = cache_with(budget("a"), policy("a", consumed=900))
    verdict = decide(cache)
    cache.settle(verdict, 10, 10, NOW_MS)
    assert cache.states["a"].forwarded_sum == 20
    later = policy("a", consumed=920).model_copy(update={"effective_at": NOW})
    cache.apply_policy(later)
    assert cache.states["a"].forwarded_sum == 0
    assert cache.states["a"].headroom() == 80


@given(
    remaining=st.integers(min_value=0, max_value=5000),
    requests=st.lists(
        st.tuples(st.integers(1, 400), st.integers(0, 400)), min_size=1, max_size=200
    ),
)
def test_concurrent_admissions_overshoot_by_at_most_one_estimate(
    remaining: int, requests: list[tuple[int, int]]
) -> None:
    """All requests in flight at once: what is admitted exceeds the headroom by less than the
    largest single estimate (when the estimates bound the real usage)."""
    cache = cache_with(budget("a"), policy("a", consumed=1000 - min(remaining, 1000), limit=1000))
    headroom = cache.states["a"].remaining
    admitted = 0
    for est_in, est_out in requests:
        if decide(cache, est_in=est_in, est_out=est_out).policy != "hard_stop":
            admitted += est_in + est_out
    largest = max(a + b for a, b in requests)
    assert admitted - headroom < largest


def test_budgets_that_alert_only_are_never_refused_locally() -> None:
    cache = cache_with(budget("a"), policy("a", "alert_only", at_limit="alert_only", consumed=1000))
    for _ in range(5):
        assert decide(cache).policy == "alert_only"


def test_the_remembered_winner_follows_policy_changes() -> None:
    cache = cache_with(
        budget("a"),
        policy("a", "degrade_route", target_model="m"),
        budget("b"),
        policy("b", "allow"),
    )
    assert decide(cache).policy == "degrade_route"
    assert decide(cache).policy == "degrade_route"  # remembered
    cache.apply_policy(policy("b", "hard_stop", consumed=1000))
    verdict = decide(cache)
    assert verdict.policy == "hard_stop" and verdict.winner is cache.states["b"]
    cache.apply_policy(policy("b", "allow"))
    assert decide(cache).policy == "degrade_route"


def crossing(
    budget_id: str,
    consumed: int,
    threshold: int = 90,
    at: datetime = NOW,
    period_key: str = "2026-11",
    limit: int = 1000,
) -> ThresholdCrossed:
    return ThresholdCrossed(
        tenant="acme",
        budget_id=budget_id,
        period_key=period_key,
        period_start=datetime(2026, 11, 1, tzinfo=UTC),
        period_end=RESET,
        metric="total",
        threshold=threshold,
        consumed=consumed,
        limit=limit,
        effective_limit=limit,
        crossed_at=at,
    )


def test_a_crossing_alone_bounds_a_hard_stop_budget() -> None:
    """The pipeline announces no policy below the line; the 90% crossing carries consumption."""
    cache = cache_with(budget("a", at_limit="hard_stop"))
    cache.apply_crossing(crossing("a", consumed=900))
    state = cache.states["a"]
    assert state.reset_at == RESET and state.headroom() == 100
    assert decide(cache, est_in=30, est_out=30).policy == "allow"
    assert decide(cache, est_in=30, est_out=30).policy == "allow"
    refused = decide(cache, est_in=1, est_out=1)
    assert refused.policy == "hard_stop" and refused.local_stop


def test_crossings_never_roll_figures_back_and_a_new_period_starts_afresh() -> None:
    cache = cache_with(budget("a", at_limit="hard_stop"), policy("a", "hard_stop", consumed=1000))
    cache.apply_crossing(crossing("a", consumed=900, at=NOW - timedelta(hours=1)))
    assert decide(cache).policy == "hard_stop"  # an older crossing changes nothing
    december = datetime(2026, 12, 2, tzinfo=UTC)
    cache.apply_crossing(
        crossing("a", consumed=750, threshold=75, at=december, period_key="2026-12")
    )
    state = cache.states["a"]
    # Dated ahead of the proxy's clock: November's traffic is still judged by November.
    assert state.period_key == "2026-11" and decide(cache).policy == "hard_stop"
    matched = cache.matched(KEY, KEY.feature, (), "m", "openai")
    verdict = cache.decide(matched, 1, 1, int(december.timestamp() * 1000))
    assert verdict.policy == "allow"
    assert state.period_key == "2026-12" and state.remaining == 250 and not state.pending


def test_a_crossing_of_the_next_period_waits_for_it_and_does_not_judge_this_one() -> None:
    """Review: a line stamped into tomorrow (a clock hours fast) crossed tomorrow's 100%; the
    proxy applied it at once, so a hard-stop budget at 40% today answered 429 until midnight
    (and tomorrow's 75% lifted today's stop). Its crossing is dated at tomorrow's start, and
    the proxy applies a crossing dated ahead of its clock only once that time comes."""
    daily = {"kind": "day", "timezone": "UTC"}
    cache = cache_with(budget("d", at_limit="hard_stop", period=daily))
    cache.apply_crossing(crossing("d", consumed=400, threshold=40, at=NOW, period_key="2026-11-27"))
    tomorrow = datetime(2026, 11, 28, tzinfo=UTC)
    cache.apply_crossing(
        crossing("d", consumed=1000, threshold=100, at=tomorrow, period_key="2026-11-28")
    )
    assert decide(cache).policy == "allow"  # today: 400 of 1000
    assert cache.states["d"].headroom() == 600 - 20  # less what this request reserved
    matched = cache.matched(KEY, KEY.feature, (), "gpt-4o", "openai")
    verdict = cache.decide(matched, 10, 10, int(tomorrow.timestamp() * 1000))
    assert verdict.policy == "hard_stop"  # tomorrow: its 100% crossing holds


def test_a_crossing_read_before_its_budget_waits_for_it() -> None:
    cache = PolicyCache()
    cache.apply_crossing(crossing("late", consumed=900))
    assert cache.states == {}
    cache.apply_budget(budget("late", at_limit="hard_stop"))
    assert cache.states["late"].headroom() == 100


def test_forwarded_counts_stay_exact_in_bounded_memory() -> None:
    cache = cache_with(budget("a"), policy("a", consumed=0, limit=10**9))
    state = cache.states["a"]
    for i in range(8000):
        state.record(NOW_MS + i * 700, 3)  # 5,600 seconds of traffic, two requests a bucket
    assert state.forwarded_sum == 24_000
    assert sum(tokens for _, _, tokens in state.forwarded) == 24_000
    assert len(state.forwarded) == 4000
    later = policy("a", consumed=30_000, limit=10**9).model_copy(
        update={"effective_at": NOW + timedelta(seconds=2800)}
    )
    cache.apply_policy(later)
    # requests after 2,800 s are kept exactly, give or take the one bucket the signal splits
    after = 3 * sum(1 for i in range(8000) if i * 700 > 2_800_000)
    assert after <= state.forwarded_sum <= after + 6
    assert state.forwarded_sum == sum(tokens for _, _, tokens in state.forwarded)


def test_beyond_the_cap_old_buckets_merge_and_nothing_is_lost() -> None:
    cache = cache_with(budget("a"), policy("a", consumed=0, limit=10**9))
    state = cache.states["a"]
    for i in range(10_000):
        state.record(NOW_MS + i * 2000, 1)
    assert len(state.forwarded) == 4096
    assert state.forwarded_sum == sum(tokens for _, _, tokens in state.forwarded) == 10_000


def test_a_refusal_names_budget_usage_limit_and_reset() -> None:
    from services.proxy.refusal import refusal_message, retry_after

    cache = cache_with(budget("team-cap"), policy("team-cap", "hard_stop", consumed=1200))
    verdict = decide(cache)
    message = refusal_message(verdict, NOW)
    assert "'team-cap' (team-cap)" in message
    assert "1,200 of 1,000 total tokens" in message
    assert "resets at 2026-12-01T00:00:00Z" in message
    assert retry_after(verdict, NOW) == int((RESET - NOW).total_seconds())

    local = cache_with(budget("b"), policy("b", consumed=999))
    held = decide(local, est_in=5, est_out=5)
    refused = decide(local)
    assert refused.local_stop and "10 more reserved by requests in flight" in refusal_message(
        refused, NOW
    )
    local.settle(held, 1, 1, NOW_MS)


def _decide_at(cache: PolicyCache, at: datetime) -> Any:
    matched = cache.matched(KEY, KEY.feature, (), "gpt-4o", "openai")
    return cache.decide(matched, 10, 10, int(at.timestamp() * 1000))


def test_a_deferred_crossing_read_before_an_amendment_is_dropped_not_applied_stale() -> None:
    """Review: deferred with the budget's action and limit of that moment, it turned a budget
    amended to alert_only (or a higher limit) back into a hard stop with nothing left, for the
    whole next day."""
    daily = {"kind": "day", "timezone": "UTC"}
    cache = cache_with(budget("d", at_limit="hard_stop", period=daily))
    tomorrow = datetime(2026, 11, 28, tzinfo=UTC)
    cache.apply_crossing(
        crossing("d", consumed=1000, threshold=100, at=tomorrow, period_key="2026-11-28")
    )
    cache.apply_budget(
        budget("d", revision=2, kind=BudgetAmended, at_limit="alert_only", period=daily,
               limits={"total_tokens": 100_000})
    )  # fmt: skip
    assert _decide_at(cache, tomorrow).policy == "allow"
    assert cache.states["d"].pending == []


def test_of_a_periods_deferred_crossings_the_one_with_most_consumption_holds() -> None:
    """Review: all carry the period's start as their date; only the first (75%) was applied,
    so a hard-stop budget at 101% let more requests through."""
    daily = {"kind": "day", "timezone": "UTC"}
    cache = cache_with(budget("d", at_limit="hard_stop", period=daily))
    tomorrow = datetime(2026, 11, 28, tzinfo=UTC)
    for threshold, consumed in ((75, 760), (90, 930), (100, 1010)):
        cache.apply_crossing(
            crossing("d", consumed=consumed, threshold=threshold, at=tomorrow,
                     period_key="2026-11-28")
        )  # fmt: skip
    assert _decide_at(cache, tomorrow).policy == "hard_stop"
    assert cache.states["d"].consumed == 1010


def test_a_crossing_dated_later_but_with_less_consumption_never_rolls_figures_back() -> None:
    """Review: a 75% crossing deferred to 12:04 caught up over the 90% one of 12:00:30 and the
    headroom went from 90 to 240 (within a period consumption only grows)."""
    cache = cache_with(budget("a", at_limit="hard_stop"))
    cache.apply_crossing(crossing("a", consumed=910, threshold=90, at=NOW + timedelta(seconds=30)))
    ahead = NOW + timedelta(minutes=4)  # a line stamped ahead of the proxy's clock
    cache.apply_crossing(crossing("a", consumed=760, threshold=75, at=ahead))
    assert _decide_at(cache, ahead + timedelta(minutes=1)).policy == "allow"
    assert cache.states["a"].consumed == 910


def test_after_a_restart_the_topic_read_first_does_not_decide_the_verdict() -> None:
    """Review: past midnight, yesterday's hard_stop policy read after today's 100% crossing
    replaced today's state, and its reset (midnight, passed) then let everything through; read
    in the other order the verdict was hard_stop, as in the live run."""
    daily = {"kind": "day", "timezone": "UTC"}
    yesterday = policy("d", "hard_stop", consumed=1000).model_copy(
        update={"period_key": "2026-11-26", "effective_at": NOW - timedelta(hours=14),
                "reset_at": datetime(2026, 11, 27, tzinfo=UTC)}
    )  # fmt: skip
    today = crossing("d", consumed=1000, threshold=100, at=NOW, period_key="2026-11-27")
    verdicts = []
    for first, second in ((yesterday, today), (today, yesterday)):
        cache = cache_with(budget("d", at_limit="hard_stop", period=daily))
        for event in (first, second):
            if isinstance(event, PolicyChanged):
                cache.apply_policy(event)
            else:
                cache.apply_crossing(event)
        verdicts.append(decide(cache).policy)
    assert verdicts == ["hard_stop", "hard_stop"]
