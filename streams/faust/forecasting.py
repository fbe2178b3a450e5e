"""The forecast agent: daily usage per budget, projections on a timer and after crossings.

- `track_usage_days` reads the charges topic (its own subscription beside the ledger's) and
  folds every charge into the budget's `UsageDays` (local days, watermarks per source
  partition, so redelivery never double-counts). When a charge crosses one of the budget's
  thresholds, the budget is queued for a prompt recompute.
- `forecast_budgets` (every `interval` seconds, default one hour) and
  `forecast_after_crossings` (every few seconds, only when something is queued) project the
  budgets this worker owns. The fitting runs in a worker process (`ProcessPoolExecutor`), so
  the event loop, and with it stream processing, never waits behind numpy.
- Each projection is published as `ForecastUpdated` on the forecasts topic, keyed by budget;
  the first time in a period that a p50 exceeds its limit, one `ProjectedOverrun` follows,
  and the period is remembered in the budget's stored days so a restart does not repeat it.
- `threshold_fields(...)` gives a crossing the projection, trend and action of the latest
  forecast of its period.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
from faust.types import EventT, TopicT
from pydantic import ValidationError

from schemas.charges import BudgetCharged
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated
from schemas.topics import CHARGES, FORECASTS
from services.common.kafka import partition_for
from streams.budgets import BudgetIndex
from streams.faust.charging import StoredLedger, policy_changed
from streams.forecast import signals
from streams.forecast.errors import ForecastInputError
from streams.forecast.profile import pool_profiles, weekday_profile
from streams.forecast.project import COLD_START_DAYS
from streams.forecast.usage_days import UsageDays, add_lines, announce
from streams.ledger import ChargeLine, LedgerState
from streams.periods import from_ms, period_of

log = logging.getLogger("allotment.forecast")


@dataclass(frozen=True)
class ForecastConfig:
    """`interval`: seconds between full recomputes; `crossing_delay`: how soon after a
    crossing its budget is recomputed; `processes`: 0 runs fits in a thread instead."""

    interval: float = 3600.0
    crossing_delay: float = 2.0
    engine: str = "fast"
    n_paths: int = 1000
    processes: int = 1

    @classmethod
    def from_env(cls) -> ForecastConfig:
        env = os.environ
        config = cls(
            interval=float(env.get("ALLOTMENT_FORECAST_INTERVAL", cls.interval)),
            crossing_delay=float(env.get("ALLOTMENT_FORECAST_CROSSING_DELAY", cls.crossing_delay)),
            engine=env.get("ALLOTMENT_FORECAST_ENGINE", cls.engine),
            processes=int(env.get("ALLOTMENT_FORECAST_PROCESSES", cls.processes)),
        )
        if config.engine not in ("fast", "statsmodels"):
            raise ForecastInputError("ALLOTMENT_FORECAST_ENGINE", "must be fast or statsmodels")
        if config.interval <= 0 or config.crossing_delay <= 0:
            raise ForecastInputError("ALLOTMENT_FORECAST_INTERVAL", "must be positive seconds")
        return config


@dataclass(frozen=True)
class PolicyHooks:
    """The pipeline's policy state, for budgets that degrade on a projected overrun."""

    current: Callable[[str], dict[str, Any] | None]
    ledger: Callable[[str], LedgerState]
    write: Callable[[str, dict[str, Any]], None]

    def overrun_policy(
        self, budget: Any, state: LedgerState, now: datetime
    ) -> dict[str, Any] | None:
        """The overrun-aware policy wire when it differs from the one in force, else None."""
        new = signals.overrun_decision(budget, state, now).to_event(now).to_wire()
        return new if policy_changed(self.current(budget.budget_id), new) else None


class Forecaster:
    """Wires the forecast agent and its timers onto a pipeline's Faust app."""

    def __init__(
        self,
        app: faust.App,
        charges: TopicT,
        forecasts: TopicT,
        budgets: Callable[[], BudgetIndex],
        config: ForecastConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policies: PolicyHooks | None = None,
    ) -> None:
        self.app = app
        self.policies = policies
        self.charges = charges
        self.forecasts = forecasts
        self.budgets = budgets
        self.config = config
        self.clock = clock
        self.partitions = CHARGES.partitions
        # Keyed by budget id like the charges topic, so writes from a timer find their
        # changelog partition through the partitioner (no current stream event needed).
        self.days = app.Table("forecast_days", partitions=self.partitions, use_partitioner=True)
        self.latest: dict[str, ForecastUpdated] = {}
        self.pending: set[str] = set()
        self._lock = asyncio.Lock()
        self._executor: ProcessPoolExecutor | None = None

        async def track_usage_days(stream: Any) -> None:
            async for event in stream.events():
                self.track(event)

        async def forecast_budgets() -> None:
            await self.forecast(self.owned_budgets())

        async def forecast_after_crossings() -> None:
            if self.pending:
                queued, self.pending = self.pending, set()
                await self.forecast(sorted(queued))

        app.agent(charges, name="track_usage_days", concurrency=1)(track_usage_days)
        app.timer(config.interval, name="forecast_budgets")(forecast_budgets)
        app.timer(config.crossing_delay, name="forecast_after_crossings")(forecast_after_crossings)

    def stored(self, budget_id: str) -> UsageDays:
        raw = self.days.get(budget_id.encode())
        return UsageDays(budget_id) if raw is None else UsageDays.from_dict(orjson.loads(raw))

    def track(self, event: EventT) -> None:
        """Fold one charge message into the budget's days; queue it if it crossed a line.

        A failure here is logged and the charge skipped: the days feed a forecast, not the
        accounting, and must never stop the ledger that reads the same topic.
        """
        try:
            self._track(event)
        except (AllotmentError, ValidationError, ValueError, KeyError) as exc:
            log.error("charge not tracked for forecasting", extra={"error": str(exc)})

    def _track(self, event: EventT) -> None:
        try:
            charge = BudgetCharged.model_validate_json(event.message.value or b"")
        except ValidationError:
            return  # the ledger's agent dead-letters it; nothing to count here
        budget = self.budgets().get(charge.budget_id)
        if budget is None or not charge.lines:
            return
        lines = [ChargeLine.from_wire(row) for row in charge.lines]
        before = self.stored(charge.budget_id)
        after = add_lines(before, budget.spec.period.timezone, charge.source_partition, lines)
        if after is before:
            return
        self.days[charge.budget_id.encode()] = orjson.dumps(after.to_dict())
        at = from_ms(max(line.occurred_at_ms for line in lines))
        if signals.crossed_thresholds(budget, before, after, at):
            self.pending.add(charge.budget_id)

    def owned_budgets(self) -> list[str]:
        name = self.charges.get_topic_name()
        owned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}
        return sorted(
            key.decode()
            for key in list(self.days.keys())
            if partition_for(key.decode(), self.partitions) in owned
        )

    def jobs(self, budget_ids: list[str], as_of: datetime) -> list[dict[str, Any]]:
        """Plain-data jobs; newcomers get the weekday profile pooled over their tenant."""
        index = self.budgets()
        usage = {b: self.stored(b) for b in budget_ids}
        live = [(b, index.get(b)) for b in budget_ids]
        yesterday = as_of.date() - timedelta(days=1)
        profiles: dict[str, list[Any]] = defaultdict(list)
        for raw_key in list(self.days.keys()):
            other = index.get(raw_key.decode())
            if other is not None:
                series = self.stored(other.budget_id).series("total", yesterday)
                profiles[other.tenant].append(weekday_profile(series))
        result = []
        for budget_id, budget in live:
            if budget is None or budget.retired:
                continue
            job: dict[str, Any] = {
                "budget": budget.to_dict(),
                "usage": usage[budget_id].to_dict(),
                "as_of": as_of.isoformat(),
                "engine": self.config.engine,
                "n_paths": self.config.n_paths,
            }
            if len(usage[budget_id].days) <= COLD_START_DAYS:
                pooled = pool_profiles(profiles.get(budget.tenant, []))
                if pooled is not None:
                    job["pooled"] = {metric: list(pooled.factors) for metric in budget.limits}
            result.append(job)
        return result

    async def forecast(self, budget_ids: list[str]) -> None:
        """Project, off the event loop, and publish. One run at a time."""
        if not budget_ids:
            return
        async with self._lock:
            as_of = self.clock()
            jobs = self.jobs(budget_ids, as_of)
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._pool(), signals.forecast_jobs, jobs)
            for out in outputs:
                if "error" in out:
                    log.error("forecast failed", extra=out)
                    continue
                await self.publish(out)
            log.info("forecasts published", extra={"budgets": len(outputs)})

    async def publish(self, out: dict[str, Any]) -> None:
        updated = ForecastUpdated.model_validate(out["updated"])
        key = updated.budget_id.encode()
        await self.forecasts.send(key=key, value=orjson.dumps(out["updated"]))
        self.latest[updated.budget_id] = updated
        if out["overrun"] is not None:
            await self.forecasts.send(key=key, value=orjson.dumps(out["overrun"]))
            state = announce(self.stored(updated.budget_id), updated.period_key)
            self.days[key] = orjson.dumps(state.to_dict())
            await self.degrade_early(updated)

    async def degrade_early(self, updated: ForecastUpdated) -> None:
        """Demote a budget that opts in, now that its overrun is projected."""
        budget = self.budgets().get(updated.budget_id)
        if self.policies is None or budget is None:
            return
        if not signals.opts_in_to_overrun_degrade(budget):
            return
        ledger = self.policies.ledger(budget.budget_id)
        policy = self.policies.overrun_policy(budget, ledger, updated.as_of)
        if policy is not None:
            self.policies.write(budget.budget_id, policy)

    def threshold_fields(
        self, budget_id: str, period_key: str, metric: Any, limit: int
    ) -> dict[str, Any]:
        """What a crossing of `budget_id` adds to its payload from the latest forecast."""
        return signals.threshold_fields(
            self.latest.get(budget_id), period_key, metric, limit, self.stored(budget_id)
        )

    def _pool(self) -> ProcessPoolExecutor | None:
        if self.config.processes <= 0:
            return None  # the loop's default thread pool
        if self._executor is None:
            context = multiprocessing.get_context("spawn")  # never fork a threaded process
            self._executor = ProcessPoolExecutor(self.config.processes, mp_context=context)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class EnrichingCharger:
    """The pipeline's `Charger`, with every new crossing's payload completed from the latest
    forecast of its period (projection, band, trend, recommended action).

    The fields are added before the crossing is stored in the ledger value and sent, so a
    re-emission after a crash stays byte-identical to the first. For a budget that degrades
    on a projected overrun, once the overrun of the current period was announced, the policy
    the charge computes takes the overrun into account, so a later charge does not undo the
    early demotion.
    """

    def __init__(self, inner: Any, forecaster: Forecaster) -> None:
        self.inner = inner
        self.forecaster = forecaster

    def charge(self, stored: Any, budget: Any, charge: Any) -> Any:
        known = set(stored.crossings)
        outcome = self.inner.charge(stored, budget, charge)
        for key, wire in outcome.stored.crossings.items():
            if key in known or wire.get("projection") is not None:
                continue
            wire.update(
                self.forecaster.threshold_fields(
                    budget.budget_id, wire["period_key"], wire["metric"], wire["limit"]
                )
            )
        hooks = self.forecaster.policies
        if hooks is None or not signals.opts_in_to_overrun_degrade(budget):
            return outcome
        state = outcome.stored.state
        if state.event_time_high_ms <= 0:
            return outcome
        now = from_ms(state.event_time_high_ms)
        period_key = period_of(budget.spec.period, now).key
        if period_key in self.forecaster.stored(budget.budget_id).announced:
            # The overrun-aware decision at the ledger's "now" replaces the charge's own
            # (it is at least as restrictive). The charger reports one policy (`policy`)
            # or, in newer versions, a list of them (`policies`).
            new = hooks.overrun_policy(budget, state, now)
            if hasattr(outcome, "policies"):
                outcome.policies = [] if new is None else [new]
            else:
                outcome.policy = new
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def attach_forecaster(pipeline: Any, config: ForecastConfig | None = None) -> Forecaster:
    """Add the forecast agent to a wired `Pipeline` (its one registration point)."""
    app = pipeline.app
    forecasts = app.topic(
        FORECASTS.name(pipeline.config.topic_prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=FORECASTS.partitions,
        internal=False,
    )
    tables = pipeline.tables

    def ledger(budget_id: str) -> LedgerState:
        return StoredLedger.from_bytes(tables.ledger.get(budget_id.encode()), budget_id).state

    def write(budget_id: str, policy: dict[str, Any]) -> None:
        tables.policies[budget_id.encode()] = orjson.dumps(policy)  # use_partitioner table

    forecaster = Forecaster(
        app,
        pipeline.topics.charges,
        forecasts,
        tables.budget_view.index,
        config or ForecastConfig.from_env(),
        policies=PolicyHooks(tables.current_policy, ledger, write),
    )
    pipeline.charger = EnrichingCharger(pipeline.charger, forecaster)
    pipeline.forecaster = forecaster
    return forecaster
