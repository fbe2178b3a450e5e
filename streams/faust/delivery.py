"""Nothing the worker accepted is lost: a failure it cannot handle ends the process instead.

The worker runs at-least-once. An offset is committed only once its event was processed and
the producer flushed; a process that exits before that commit reads the event again after its
restart (status 70: "read it again", what a supervisor restarts, like any crash). Two kinds
of failure would otherwise be acknowledged without their effect:
- an agent body that raises: Faust acks the event and restarts the agent (`crash_on_error`);
- a send that fails after it was queued: Faust logs it and nothing else, and the producer
  flush before a commit waits for the delivery without failing for it. An agent awaits its
  own sends (`delivered`) where it can; `SendFailures` covers every other send (table
  changelogs, which are also the thresholds and policies topics, and the forecasts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Iterator
from typing import Any

import faust

log = logging.getLogger("allotment.worker")

REREAD = 70
"""Exit status of a worker that stopped so that uncommitted records are read again."""


def exit_to_reread(message: str, exc: BaseException, **context: Any) -> None:
    """Log why and end the process now: no offset commit, no clean-up that could commit."""
    log.critical(message, exc_info=exc, extra=context)
    logging.shutdown()
    os._exit(REREAD)


@contextlib.contextmanager
def crash_on_error(agent: str) -> Iterator[None]:
    """End the process on an unexpected error instead of acking the event and moving on.

    Faust acks an event whose processing raised, and its supervisor restarts the agent with
    the next one: that would drop the event. Exiting leaves its offset uncommitted, so the
    restarted worker reads it again (at-least-once), and the error is in the log.
    """
    try:
        yield
    except Exception as exc:
        exit_to_reread("agent failed; exiting so the batch is redelivered", exc, agent=agent)


async def delivered(deliveries: list[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged every send; raise the first failure.

    Faust's `topic.send` only queues the record and hands back its delivery. An agent awaits
    them before it finishes an event, inside `crash_on_error`, so a refused or expired
    delivery ends the process and the event is read again after the restart.
    """
    if deliveries:
        await asyncio.gather(*deliveries)


class SendFailures(faust.Sensor):
    """Ends the worker when any queued send of the app fails for good.

    Faust calls this from the delivery's callback. The aiokafka batch resolves its own future
    first and its records' futures right after, in one step; the flush that precedes an offset
    commit resumes only after those callbacks ran, so the process is gone before the commit
    that would have covered the record whose output was lost.
    """

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        exit_to_reread("a send failed after it was queued; exiting so it is made again", exc)
