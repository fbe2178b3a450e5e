"""The dedupe index's restore, off the event loop and never beside another use of the index.

Why a thread: the restore walks every dedupe table record of the owned usage partitions
(measured 6.6 s for 3M records). On the loop it also stopped aiokafka's heartbeats, which run
as tasks on that loop, and the worker's session timeout is 10 s: a larger table (low event
rates make nearly a record per event, over a 7-day window) would cost the group membership,
start another rebalance, another recovery, the same restore: a rebalance loop.

What the thread changes, and what keeps it exact (faust-streaming 0.15.3,
tables/recovery.py):
- Faust awaits the recovery callbacks (`Recovery.on_recovery_completed`: `asyncio.wait` of
  one task per table) before it resumes the stream partitions, so no usage record reaches
  the resolve agent while the callback awaits its restore.
- A new rebalance cancels `on_recovery_completed` (`Recovery._wait` races it against the next
  recovery's start signal), and a stop cancels every task; neither stops a thread. Every
  restore is therefore a task of its own, shielded from its callback, chained after the
  restore before it (`run`); a revoke's close and every resolve take first wait until none
  runs (`idle`). A failure ends the process from that task (`failed`), so a restore whose
  callback is gone still cannot fail unseen.
- What the thread reads: the dedupe table's store (not the table: its reads feed Faust's
  sensors, loop-side state). Nothing on the loop changes that store while the thread reads
  it: its only writer, the resolve agent, is paused until the callback returns; changelog
  recovery of the active partitions is over before callbacks run, and the worker keeps no
  standby replicas; the store opens and drops partitions only in `on_partitions_assigned`,
  which comes after the revoke's signal, whose close waits for the restore. A stop clears the
  store, though (`Store.stop`, from `App._stop_consumer`), without a revoke signal: a restore
  that fails while the app stops is logged instead (`IndexRestores.failed`).
- The index closed from outside the loop (the worker's last `close`, after the loop ended)
  waits on the index's own lock (`RocksDedupeIndex`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from schemas.errors import AllotmentError
from streams.faust.delivery import exit_to_reread

log = logging.getLogger("allotment.worker")

T = TypeVar("T")


class RestoreFailed(AllotmentError):
    """The restore run by `IndexRestores.run` raised (already handled by `failed`)."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"dedupe index restore failed: {cause!r}")


class IndexRestores(Generic[T]):
    """Runs each restore in a thread, one after the other, and tells when none runs."""

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self.stopping = stopping
        self._last: asyncio.Task[T | RestoreFailed] | None = None

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` in a thread once every earlier restore ended; return what it returns.

        Cancelling the caller leaves the restore running (and still chained): the next
        `run`, `idle` or the failure handler sees it through."""
        task = asyncio.ensure_future(self._run(self._last, work))
        self._last = task
        outcome = await asyncio.shield(task)
        if isinstance(outcome, RestoreFailed):
            raise outcome
        return outcome

    async def _run(
        self, previous: asyncio.Task[T | RestoreFailed] | None, work: Callable[[], T]
    ) -> T | RestoreFailed:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # never cancels it, never raises what it raised
        try:
            return await asyncio.to_thread(work)
        except Exception as exc:
            self.failed(exc)
            return RestoreFailed(exc)

    def failed(self, exc: BaseException) -> None:
        """Exit 70, unless the app is stopping (its store was cleared under the restore): then
        no stream resumed after this recovery, so nothing was resolved against the half
        restored index, and the next start restores again (what a failed restore merged is a
        subset of the table, completed by the next one)."""
        if self.stopping():
            log.warning("dedupe index restore ended by the stop", extra={"error": repr(exc)})
            return
        exit_to_reread("dedupe index restore failed; exiting so recovery runs again", exc)

    def running(self) -> bool:
        return self._last is not None and not self._last.done()

    async def idle(self) -> None:
        """Return once no restore runs; a restore started meanwhile is waited for too.

        Costs one attribute check when none runs (every resolve take calls it)."""
        while self._last is not None and not self._last.done():
            await asyncio.wait([self._last])
