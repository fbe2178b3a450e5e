"""The forecast agent: daily usage per budget, projections on a timer and after crossings.

- `track` folds every charge the ledger agent applies into the budget's `UsageDays`
  (local days, watermarks per source partition, so redelivery never double-counts). The
  ledger hands it the lines it already decoded (`ForecastHooks.track`), inside the same
  event, before its offset is acknowledged: a second subscription to the charges topic would
  decode every charge twice. When a charge crosses one of the budget's thresholds, the budget
  is queued for a prompt recompute.
- `forecast_budgets` (every `interval` seconds, default one hour) and
  `forecast_after_crossings` (every few seconds, only when something is queued) project the
  budgets this worker owns. The fitting runs in a worker process (`ProcessPoolExecutor`), so
  the event loop, and with it stream processing, never waits behind numpy.
- Each projection is published as `ForecastUpdated` on the forecasts topic, keyed by budget;
  the first time in a period that a p50 exceeds its limit, one `ProjectedOverrun` follows,
  and the period is remembered in the budget's stored days so a restart does not repeat it.
- `threshold_fields(...)` gives a crossing the projection, trend and action of the latest
  forecast of its period; with `overrun_announced(...)` it is what the pipeline's `Charger`
  asks through its `ForecastHooks` (no wrapping of the charger). An announced overrun also
  asks the pipeline to re-decide the budget at once (`on_overrun`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import faust
import orjson
from faust.types import TopicT
from pydantic import ValidationError

from schemas.budgets import Metric
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated
from schemas.topics import CHARGES, FORECASTS
from services.common.kafka import partition_for
from streams.budgets import Budget, BudgetIndex
from streams.faust.charging import ForecastHooks
from streams.forecast import signals
from streams.forecast.errors import ForecastInputError
from streams.forecast.profile import WeekdayProfile, pool_profiles, weekday_profile
from streams.forecast.project import STATESPACE_DAYS
from streams.forecast.usage_days import UsageDays, add_lines, announce
from streams.ledger import ChargeLine
from streams.periods import from_ms

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
        on_overrun: Callable[[str, datetime], None] | None = None,
        limits: Callable[[Budget, datetime], Mapping[Metric, int] | None] = lambda _b, _at: None,
    ) -> None:
        self.app = app
        self.on_overrun = on_overrun
        self.limits = limits
        self.charges = charges
        self.forecasts = forecasts
        self.budgets = budgets
        self.config = config
        self.clock = clock
        self.partitions = CHARGES.partitions
        # Keyed by budget id like the charges topic, so writes from a timer find their
        # changelog partition through the partitioner (no current stream event needed).
        self.days = app.Table("forecast_days", partitions=self.partitions, use_partitioner=True)
        # The decoded value of each table entry, beside the bytes it was decoded from: a hit
        # needs the table to hold that very object (see `stored`).
        self._decoded: dict[bytes, tuple[bytes, UsageDays]] = {}
        self.latest: dict[str, ForecastUpdated] = {}
        self.pending: set[str] = set()
        self.refused = 0  # forecasts records refused before they were queued, or overruns
        self._lock = asyncio.Lock()
        self._executor: ProcessPoolExecutor | None = None

        async def forecast_budgets() -> None:
            await self.forecast(self.owned_budgets())

        async def forecast_after_crossings() -> None:
            if self.pending:
                queued, self.pending = self.pending, set()
                await self.forecast(sorted(queued))

        app.timer(config.interval, name="forecast_budgets")(forecast_budgets)
        app.timer(config.crossing_delay, name="forecast_after_crossings")(forecast_after_crossings)

    def stored(self, budget_id: str) -> UsageDays:
        """The budget's days as the table holds them.

        The table (restored from its changelog after every start and rebalance) is the only
        copy; the decoded value is reused only while the table still holds the very bytes
        object it was decoded from. A recovery or another write stores a new object, so a
        stale decode is never returned.
        """
        key = budget_id.encode()
        raw = self.days.get(key)
        if raw is None:
            return UsageDays(budget_id)
        hit = self._decoded.get(key)
        if hit is not None and hit[0] is raw:
            return hit[1]
        state = UsageDays.from_dict(orjson.loads(raw))
        self._decoded[key] = (raw, state)
        return state

    def _store(self, state: UsageDays) -> None:
        key = state.budget_id.encode()
        raw = orjson.dumps(state.to_dict())
        self.days[key] = raw
        self._decoded[key] = (raw, state)

    def track(self, budget: Budget, source_partition: int, lines: Sequence[ChargeLine]) -> None:
        """Fold one charge's lines (decoded by the ledger agent, in position order) into the
        budget's days; queue the budget if the charge crossed one of its thresholds.

        Any failure here is logged and the charge skipped: the days feed a forecast, not the
        accounting. This runs inside the ledger agent, which ends the process on an error it
        does not expect (`agents.crash_on_error`); a bug in the forecast's history must not
        stop the ledger, nor make it read the same charge again and again.
        """
        try:
            self._track(budget, source_partition, lines)
        except Exception as exc:  # any: see the docstring
            log.error(
                "charge not tracked for forecasting",
                exc_info=not isinstance(exc, AllotmentError | ValidationError | ValueError),
                extra={"budget_id": budget.budget_id, "error": str(exc)},
            )

    def _track(self, budget: Budget, source_partition: int, lines: Sequence[ChargeLine]) -> None:
        if not lines:
            return
        before = self.stored(budget.budget_id)
        after = add_lines(before, budget.spec.period.timezone, source_partition, lines)
        if after is before:
            return
        self._store(after)
        at = from_ms(max(line.occurred_at_ms for line in lines))
        if signals.crossed_thresholds(budget, before, after, at):
            self.pending.add(budget.budget_id)

    def owned_budgets(self) -> list[str]:
        name = self.charges.get_topic_name()
        owned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}
        return sorted(
            key.decode()
            for key in list(self.days.keys())
            if partition_for(key.decode(), self.partitions) in owned
        )

    def jobs(self, budget_ids: list[str], as_of: datetime) -> list[dict[str, Any]]:
        """Plain-data jobs. Budgets with under two weeks of days get the weekday profile pooled
        over their tenant (the cold-start tiers lean on it); every job carries the budget's
        effective limits when its tenant's allocations moved any."""
        index = self.budgets()
        usage = {b: self.stored(b) for b in budget_ids}
        live = [(b, index.get(b)) for b in budget_ids]
        newcomers = {
            budget.tenant
            for budget_id, budget in live
            if budget is not None and len(usage[budget_id].days) <= STATESPACE_DAYS
        }
        profiles = self._tenant_profiles(index, newcomers, as_of.date() - timedelta(days=1))
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
            effective = self.limits(budget, as_of)
            if effective is not None:
                job["limits"] = dict(effective)
            if len(usage[budget_id].days) <= STATESPACE_DAYS:
                pooled = pool_profiles(profiles.get(budget.tenant, []))
                if pooled is not None:
                    job["pooled"] = {metric: list(pooled.factors) for metric in budget.limits}
            result.append(job)
        return result

    def _tenant_profiles(
        self, index: BudgetIndex, tenants: set[str], last: date
    ) -> dict[str, list[WeekdayProfile | None]]:
        """The weekday profiles of every stored budget of `tenants` (none asked: nothing read)."""
        profiles: dict[str, list[WeekdayProfile | None]] = defaultdict(list)
        if not tenants:
            return profiles
        for raw_key in list(self.days.keys()):
            other = index.get(raw_key.decode())
            if other is not None and other.tenant in tenants:
                series = self.stored(other.budget_id).series("total", last)
                profiles[other.tenant].append(weekday_profile(series))
        return profiles

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
        """Publish a projection, and its period's `ProjectedOverrun` the first time.

        A refused `ForecastUpdated` is logged and counted (the worker's `SendFailures` treats
        the forecasts topic as derived): the next run publishes a newer one, and the ledger
        does not stop for it. A `ProjectedOverrun` is said once per period, so its period is
        marked announced only after the broker acknowledged it; if refused, it is not marked
        and the next run announces it again (at-least-once, never lost).
        """
        updated = ForecastUpdated.model_validate(out["updated"])
        key = updated.budget_id.encode()
        if await self._send(key, out["updated"]) is None:
            return
        self.latest[updated.budget_id] = updated
        if out["overrun"] is not None:
            sent = await self._send(key, out["overrun"])
            if sent is None or not await self._acknowledged(sent, updated.budget_id):
                return
            self._store(announce(self.stored(updated.budget_id), updated.period_key))
            await self.degrade_early(updated)

    async def _send(self, key: bytes, value: dict[str, Any]) -> Any:
        """Queue one record on the forecasts topic; its delivery, or None if it was refused
        before it was queued (logged)."""
        try:
            return await self.forecasts.send(key=key, value=orjson.dumps(value))
        except Exception as exc:  # any send error: a forecast is recomputed at the next run
            self.refused += 1
            log.error("forecast not published", extra={"key": key.decode(), "error": repr(exc)})
            return None

    async def _acknowledged(self, delivery: Any, budget_id: str) -> bool:
        try:
            await delivery
        except Exception as exc:  # refused or expired: announced again at the next run
            self.refused += 1
            log.error("projected overrun not acknowledged; announced again at the next run",
                      extra={"budget_id": budget_id, "error": repr(exc)})  # fmt: skip
            return False
        return True

    async def degrade_early(self, updated: ForecastUpdated) -> None:
        """Let the pipeline re-decide a budget that opts in, now that its overrun is
        projected (the decision itself is `streams.policy.decide`'s, in the charge path's
        `Pipeline.redecide`)."""
        budget = self.budgets().get(updated.budget_id)
        if self.on_overrun is None or budget is None:
            return
        if signals.opts_in_to_overrun_degrade(budget):
            self.on_overrun(budget.budget_id, updated.as_of)

    def overrun_announced(self, budget_id: str, period_key: str) -> bool:
        """Whether the `ProjectedOverrun` of this budget's period was published."""
        return period_key in self.stored(budget_id).announced

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
    forecaster = Forecaster(
        app,
        pipeline.topics.charges,
        forecasts,
        pipeline.tables.budget_view.index,
        config or ForecastConfig.from_env(),
        on_overrun=pipeline.on_projected_overrun,
        limits=pipeline.allocations.limits,
    )
    pipeline.charger.forecasts = ForecastHooks(
        forecaster.overrun_announced, forecaster.threshold_fields, forecaster.track
    )
    pipeline.forecaster = forecaster
    # A refused forecast is logged, not a reason to stop the ledger (see `publish`).
    pipeline.send_failures.derived.add(forecasts.get_topic_name())
    return forecaster
