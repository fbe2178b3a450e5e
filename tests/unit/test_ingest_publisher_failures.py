"""The ingest publisher answers any failure of a send with `PublishUnavailable` (HTTP 503),
and drops its shared producer only if that producer did not restart during the send
(review 3B, finding 1). A 500 is not retried by OTLP exporters: accepted usage would be lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from schemas.usage import UsageRecorded
from services.common.usage_producer import TopicLimitTooLow, UsageNotAcknowledged
from services.ingest.errors import EventsTooLarge, PublishUnavailable
from services.ingest.publisher import KafkaUsageSink


class FakeProducer:
    """A UsageProducer stand-in whose send raises what the test asks for."""

    def __init__(self, error: Exception | None, restart_during_send: bool = False) -> None:
        self.error = error
        self.restart_during_send = restart_during_send
        self.restarts = 0
        self.stopped = 0
        self.sent = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped += 1

    async def send(self, events: Sequence[UsageRecorded]) -> int:
        self.sent += 1
        if self.restart_during_send:
            self.restarts += 1
        if self.error is not None:
            raise self.error
        return 1


def _sink(*producers: FakeProducer) -> KafkaUsageSink:
    queue = list(producers)
    return KafkaUsageSink("unused:9092", "t", producer_factory=lambda _b, _p: queue.pop(0))  # type: ignore[arg-type,return-value]


def _events() -> list[UsageRecorded]:
    now = datetime.now(UTC)
    return [
        UsageRecorded(
            event_id="e-1",
            source="test",
            occurred_at=now,
            received_at=now,
            tenant="acme",
            input_uncached=1,
            output=1,
        )
    ]


@pytest.mark.parametrize(
    "error", [RuntimeError("start() was not called"), ValueError("x"), KeyError("y")]
)
async def test_any_failure_of_a_send_is_unavailable_and_drops_the_producer(
    error: Exception,
) -> None:
    first, second = FakeProducer(error), FakeProducer(None)
    sink = _sink(first, second)
    with pytest.raises(PublishUnavailable, match=type(error).__name__):
        await sink.publish(_events())
    assert first.stopped == 1
    await sink.publish(_events())  # a new producer for the next request
    assert second.sent == 1


async def test_a_producer_that_restarted_during_the_failed_send_is_kept() -> None:
    """Its failure may be the old client's; concurrent requests are using the new one."""
    shared = FakeProducer(UsageNotAcknowledged("t", 0, 1, "OutOfOrderSequenceNumber"), True)
    sink = _sink(shared)
    with pytest.raises(PublishUnavailable):
        await sink.publish(_events())
    assert shared.stopped == 0
    shared.error, shared.restart_during_send = None, False
    await sink.publish(_events())  # the same producer, not a new one (the factory has none)
    assert shared.sent == 2
    await sink.stop()
    assert shared.stopped == 1


async def test_an_event_the_topic_refuses_within_our_cap_is_unavailable_not_too_large() -> None:
    """Review 3B, finding 5: the topic was never aligned, the record is fine: 503 (the client
    keeps it and resends), never `EventsTooLarge` (a 422 the client drops for good)."""
    refused = TopicLimitTooLow("usage", {"e-1": 300_649}, 917_504, ["e-1"])
    shared = FakeProducer(refused, restart_during_send=True)
    sink = _sink(shared)
    with pytest.raises(PublishUnavailable, match="allotment create-topics") as raised:
        await sink.publish(_events())
    assert not isinstance(raised.value, EventsTooLarge)
    assert shared.stopped == 0  # it restarted its own client; other requests keep using it
