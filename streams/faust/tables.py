"""The pipeline's tables, and the views the agents read them through.

- `dedupe` (store per config, RocksDB in production): one key per consumed batch of one usage
  partition, or several when its ids would not fit a message (keys `p:o1.i1-o2.i2`, a position
  span); its changelog partition is that usage partition (`dedupe_log.py`). It is the
  source of truth of the dedupe index, which is checked against it after every recovery
  (`dedupe_index.py`).
- `ledger` (store per config): one key per budget, the `StoredLedger` of `charging.py`; written
  once per charge message, also when every line was skipped, so a local state that ran ahead of
  its changelog before a crash reaches the changelog before the next offset commit.
- `crossings` (in memory): its changelog topic IS the thresholds topic, so after any restart or
  rebalance the set of emitted crossings is exactly what the thresholds topic holds. A local
  store could keep a write whose send never completed and claim an emission that never
  happened; memory is rebuilt from the topic each time.
- `policies` (in memory): its changelog topic IS the compacted policies topic (latest per budget).
- `budgets` (global, in memory): its changelog topic IS the compacted budgets topic; every
  worker reads all of it (configs are small). `BudgetView` reads it for the agents, and keeps
  the last spec of each retired budget it read, for charges still in flight.

The output tables use `use_partitioner=True`: their records are keyed by budget id and land
where the default partitioner puts that key, the same partition number as the charges record
they come from, because thresholds, policies and charges have the same partition count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.tables.globaltable import GlobalTable
from faust.types import EventT

from schemas.budgets import BudgetAmended, BudgetDefined, BudgetRetired
from schemas.codec import decode
from schemas.errors import AllotmentError
from streams.budgets import Budget, BudgetIndex
from streams.faust.app import WorkerConfig
from streams.faust.charging import crossing_key
from streams.faust.topics import PipelineTopics


class RawTable(faust.Table):
    """A table of bytes: keys and values are written and read as raw bytes by default.

    Faust serializes table keys and values as JSON unless a model type says otherwise, also
    when the app's serializers are "raw"; a value written as bytes then comes back as
    something else, and a changelog record it cannot decode stalls recovery for good. The
    worker's app uses this class for every `app.Table` (`app.py`), so agents (ours and the
    forecast agent's) store orjson bytes and read them back unchanged.
    """

    def __init__(self, app: Any, **kwargs: Any) -> None:
        if kwargs.get("use_partitioner") and kwargs.get("store") is None:
            # Written outside stream iteration (a timer): Faust's RocksDB store asserts a
            # current event to pick its local partition, so such a table lives in memory and
            # is restored from its changelog on every start.
            kwargs["store"] = "memory://local"
        super().__init__(app, **kwargs)

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is None else super()._serializer_from_type(typ)


class RawGlobalTable(GlobalTable):
    """`RawTable`, global."""

    def _serializer_from_type(self, typ: Any) -> Any:
        return "raw" if typ is None else super()._serializer_from_type(typ)


class TopicBackedGlobalTable(RawGlobalTable):
    """A global table whose changelog is a topic of the contract (here: budgets).

    Faust's assignor looks a global table's changelog up by the default name
    (`<app id>-<table>-changelog`) even when `changelog_topic` names another topic, and then
    fails inside the consumer thread without a word; this names the real topic.
    """

    def _changelog_topic_name(self) -> str:
        return str(self.changelog_topic.get_topic_name())


@dataclass
class EmittedCrossings:
    """(budget, period, threshold) of every crossing the thresholds topic holds."""

    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def add_wire(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            wire = orjson.loads(value)
            self.seen.add(crossing_key(wire["budget_id"], wire["period_key"], wire["threshold"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not a crossing; nothing was emitted under it

    async def on_changelog_event(self, event: EventT) -> None:
        self.add_wire(event.message.value)

    def __contains__(self, key: object) -> bool:
        return key in self.seen


class BudgetView:
    """The live budgets, rebuilt into a `BudgetIndex` only when the budgets topic moved, and
    the retired ones the ledger may still be charging.

    The topic is compacted, so a reader may see only each budget's latest event: definitions
    and amendments carry the whole spec, and a retirement ends the budget. A charge resolved
    while the budget was live can reach the ledger after its retirement; it still counts, so
    the view remembers the last spec it read of each budget, and a retired budget whose spec
    it read is kept (`find`). One whose definition compaction removed before this worker read
    it stays unknown (its charge is dead-lettered with the reason, `agents.py`).
    """

    def __init__(self) -> None:
        self.table: Any = None
        self._dirty = True
        self._index = BudgetIndex()
        self._retired: dict[str, Budget] = {}
        self._specs: dict[str, Budget] = {}

    async def on_changelog_event(self, event: EventT) -> None:
        self.remember(event.message.value)
        self._dirty = True

    def remember(self, raw: bytes | None) -> None:
        """Keep the spec of a definition or amendment read from the budgets topic."""
        budget = _budget_of(raw)
        if budget is not None:
            self._specs[budget.budget_id] = budget

    def index(self) -> BudgetIndex:
        """The live budgets (what resolve matches usage against)."""
        self._refresh()
        return self._index

    def find(self, budget_id: str) -> Budget | None:
        """A budget by id, live or retired (with its last spec), for the ledger."""
        self._refresh()
        return self._index.get(budget_id) or self._retired.get(budget_id)

    def _refresh(self) -> None:
        if not self._dirty or self.table is None:
            return
        self._dirty = False
        live, retired = _budgets_of(self.table.values(), self._specs)
        self._index = BudgetIndex(live)
        self._retired = {b.budget_id: b for b in retired}


def _config_event(raw: bytes | None) -> BudgetDefined | BudgetAmended | BudgetRetired | None:
    if not raw:
        return None
    try:
        event = decode(raw)
    except AllotmentError:
        return None
    return event if isinstance(event, BudgetDefined | BudgetAmended | BudgetRetired) else None


def _budget_of(raw: bytes | None) -> Budget | None:
    """The budget a definition or amendment states; None for anything else."""
    event = _config_event(raw)
    if isinstance(event, BudgetDefined | BudgetAmended):
        return Budget(event.budget_id, event.tenant, event.revision, event.spec)
    return None


def _budgets_of(
    values: Iterable[bytes], specs: Mapping[str, Budget]
) -> tuple[list[Budget], list[Budget]]:
    """The live budgets, and the retired ones whose last spec is in `specs`."""
    live, retired = [], []
    for raw in values:
        event = _config_event(raw)
        if isinstance(event, BudgetDefined | BudgetAmended):
            live.append(Budget(event.budget_id, event.tenant, event.revision, event.spec))
        elif isinstance(event, BudgetRetired):
            last = specs.get(event.budget_id)
            if last is not None and last.tenant == event.tenant:
                retired.append(Budget(last.budget_id, last.tenant, event.revision, last.spec, True))
    return live, retired


@dataclass
class PipelineTables:
    dedupe: Any
    ledger: Any
    crossings: Any
    policies: Any
    budgets: Any
    emitted: EmittedCrossings
    budget_view: BudgetView

    def current_policy(self, budget_id: str) -> dict[str, Any] | None:
        raw = self.policies.get(budget_id.encode())
        return None if raw is None else dict(orjson.loads(raw))


def _changelog(app: faust.App, table: str, config: WorkerConfig) -> Any:
    """A compacted changelog carrying raw bytes (Faust's default would decode it as JSON)."""
    return app.topic(
        f"{config.app_id}-{table}-changelog",
        key_serializer="raw",
        value_serializer="raw",
        partitions=config.partitions,
        compacting=True,
        acks=False,
        internal=True,
    )


def declare_tables(app: faust.App, topics: PipelineTopics, config: WorkerConfig) -> PipelineTables:
    emitted = EmittedCrossings()
    view = BudgetView()
    dedupe = app.Table(
        "dedupe", partitions=config.partitions, changelog_topic=_changelog(app, "dedupe", config)
    )
    ledger = app.Table(
        "ledger", partitions=config.partitions, changelog_topic=_changelog(app, "ledger", config)
    )
    crossings = app.Table(
        "crossings",
        store="memory://local",
        partitions=config.partitions,
        changelog_topic=topics.thresholds,
        use_partitioner=True,
        on_changelog_event=emitted.on_changelog_event,
    )
    policies = app.Table(
        "policies",
        store="memory://local",
        partitions=config.partitions,
        changelog_topic=topics.policies,
        use_partitioner=True,
    )
    budgets = app.tables.add(
        TopicBackedGlobalTable(
            app,
            name="budgets",
            beacon=app.tables.beacon,
            store="memory://local",
            partitions=1,
            standby_buffer_size=1,
            is_global=True,
            changelog_topic=topics.budgets,
            recovery_buffer_size=1,
            on_changelog_event=view.on_changelog_event,
        )
    )
    view.table = budgets
    return PipelineTables(dedupe, ledger, crossings, policies, budgets, emitted, view)
