"""Nothing the worker accepted is lost: a failure it cannot handle ends the process instead.

The worker runs at-least-once. An offset is committed only once its event was processed and
every write made while processing it was acknowledged by the broker; a process that exits
before that commit reads the event again after its restart (status 70: "read it again", what
a supervisor restarts, like any crash). Three kinds of failure would otherwise be
acknowledged without their effect:
- an agent body that raises: Faust acks the event and restarts the agent (`crash_on_error`);
- a send that fails after it was queued: Faust logs it and nothing else. An agent awaits its
  own sends (`delivered`) where it can; `SendFailures` covers every other send (table
  changelogs, which are also the thresholds and policies topics);
- a table write still on its way when the offsets are committed: Faust's producer-buffer
  flush, which runs before every commit, can return before it (`AcknowledgedBuffer`).
Only the forecasts topic is exempt: a forecast is derived, and recomputed at the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

import faust
from faust.transport.drivers.aiokafka import Producer as KafkaProducer
from faust.transport.producer import ProducerBuffer
from faust.types.transports import ProducerT
from faust.types.tuples import FutureMessage
from mode import Service

log = logging.getLogger("allotment.worker")

REREAD = 70
"""Exit status of a worker that stopped so that uncommitted records are read again."""


def exit_to_reread(message: str, exc: BaseException, **context: Any) -> None:
    """Log why and end the process now: no offset commit, no clean-up that could commit.

    The context is in the line's text as well as its fields: a write that fails again after
    every restart is found by its topic and key whatever formats the log."""
    named = " ".join(f"{key}={value}" for key, value in context.items())
    log.critical("%s [%s]" if named else "%s", message, *([named] if named else []),
                 exc_info=exc, extra=context)  # fmt: skip
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
    commit (`AcknowledgedBuffer.flush`) resumes only after those callbacks ran, so the process
    is gone before the commit that would have covered the record whose output was lost.

    Sends to a `derived` topic (the forecasts) are logged and counted instead: what they carry
    is recomputed at the next run, and a topic that keeps refusing them must not keep the
    ledger restarting. A sender that must not lose such a record awaits its delivery itself
    (the forecaster does so for `ProjectedOverrun`).
    """

    def __init__(self, derived: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.derived = set(derived)
        self.refused = 0

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> str:
        return topic  # handed back to on_send_error as its `state`

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        if state in self.derived:
            self.refused += 1
            context = {"topic": state, "error": repr(exc), "refused": self.refused}
            log.error("a derived record was refused; it is recomputed next run", extra=context)
            return
        exit_to_reread("a send failed after it was queued; exiting so it is made again", exc)


class AcknowledgedBuffer(ProducerBuffer):
    """Faust's producer buffer (every table write's changelog record goes through it), with a
    `flush` that returns only once each record put in before it was acknowledged by the broker.

    Faust calls `producer.flush()` right before it commits offsets (faust-streaming 0.15.3,
    transport/consumer.py `_commit_offsets`), and that flush is what makes a committed offset
    imply its table writes are durable. Faust's own buffer flush does not wait for them
    (transport/producer.py `ProducerBuffer.flush_atmost`): it counts only the records still
    queued, so the one `_handle_pending` already took is not waited for, and it gives up after
    0.1 s without a send; aiokafka's flush after it (drivers/aiokafka.py `Producer.flush`)
    waits only for batches already in its accumulator. A kill -9 or a refused send after the
    commit then loses a dedupe record, a ledger value, a crossing or a policy.

    Here every record put in is held until its delivery resolves; `flush` waits for all that
    were held when it started (records put later belong to events the commit does not cover:
    Faust picks the offsets before it flushes). A delivery that failed ends the process
    (`exit_to_reread`), as does a send that raised before it was queued (which would otherwise
    crash the buffer's task and leave the flush waiting forever), a send cancelled by anything
    but this buffer's own stop, and a flush still waiting past the producer's request timeout
    plus `flush_margin` (by then aiokafka expired what it held: a delivery still open is one
    that nothing will resolve). Each exit logs the write's topic and key. `wait_until_ebb`,
    Faust's back-pressure, is unchanged.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self.unacknowledged: set[FutureMessage] = set()

    def put(self, fut: FutureMessage) -> None:
        self.unacknowledged.add(fut)
        fut.add_done_callback(self.unacknowledged.discard)
        super().put(fut)

    flush_margin = 30.0
    """Seconds a flush waits beyond the producer's request timeout (after which aiokafka has
    expired every batch it holds) before it gives up on a delivery that never resolved."""

    async def flush(self) -> None:
        held = list(self.unacknowledged)
        if not held:
            return
        bound = float(self.app.conf.producer_request_timeout) + self.flush_margin  # type: ignore[union-attr]
        _, unresolved = await asyncio.wait(held, timeout=bound)
        if unresolved:
            fut = next(iter(unresolved))
            exit_to_reread(
                "table writes were not acknowledged in time; exiting so they are made again",
                TimeoutError(f"{len(unresolved)} deliveries unresolved after {bound:.1f} s"),
                bound_s=bound,
                unresolved=len(unresolved),
                **_record(fut),
            )
        for fut in held:
            exc = None if fut.cancelled() else fut.exception()
            if fut.cancelled() or exc is not None:
                exit_to_reread(
                    "a table write was not acknowledged; exiting so it is made again",
                    exc or asyncio.CancelledError(),
                    **_record(fut),
                )

    async def _send_pending(self, fut: FutureMessage) -> None:
        try:
            await super()._send_pending(fut)
        except asyncio.CancelledError as exc:
            # Only the cancellation of this task (the buffer stopping) is a stop. One raised
            # inside the send (aiokafka's, while its producer closes) would end this task and
            # leave every later flush waiting on records nobody sends.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            exit_to_reread("a table write's send was cancelled; exiting so it is made again",
                           exc, **_record(fut))  # fmt: skip
        except Exception as exc:
            exit_to_reread(
                "a table write could not be sent; exiting so it is made again", exc, **_record(fut)
            )

    @Service.task
    async def _handle_pending(self) -> None:
        # Faust's loop ends at `should_stop`, leaving queued records unsent (and its on_stop
        # flush raising). This one sends until the task is cancelled, which happens after
        # on_stop's flush returned.
        while True:
            fut = await self.pending.get()
            await self._send_pending(fut)
            self.message_sent.set()


class AcknowledgingProducer(KafkaProducer):
    """Faust's aiokafka producer, which on stop sends and awaits its buffer's writes before it
    closes the aiokafka producer.

    Faust stops the aiokafka producer first and the buffer after it (the buffer is the
    producer's child: mode stops children after `on_stop`), so a write queued after the app's
    last flush (an agent stopping) met a closed producer: `NotReady`, exit 70 on a clean stop.
    """

    async def on_stop(self) -> None:
        await self.buffer.flush()
        await super().on_stop()


def _record(fut: FutureMessage) -> dict[str, str]:
    """The topic and key of a table write, for the log line of the exit it causes: a write that
    keeps failing after every restart (a poison record) is found by them."""
    message = fut.message
    return {"topic": message.channel.get_topic_name(), "key": repr(message.key)[:200]}


def acknowledge_table_writes(app: faust.App, producer: ProducerT) -> ProducerT:
    """Give `app`'s new producer an `AcknowledgedBuffer`; call before the producer starts (and
    without `producer_threaded`, whose queue bypasses the buffer)."""
    buffer = AcknowledgedBuffer(loop=producer.loop, beacon=producer.beacon)
    buffer.app = app
    producer.buffer = buffer
    return producer
