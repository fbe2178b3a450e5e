"""The latest `ForecastUpdated` of a budget, read back from the forecasts topic.

The topic is the record: the forecast agent publishes there, and this reader answers "what
is the current projection" without a database. It scans each partition backwards in
windows from its end and stops at the first window that holds the budget, so a long topic
costs one window per partition, not a full replay.
"""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codec import decode
from schemas.errors import AllotmentError
from schemas.signals import ForecastUpdated
from schemas.topics import FORECASTS

WINDOW = 2000


async def latest_forecast(
    bootstrap: str, prefix: str, budget_id: str, tenant: str | None = None
) -> ForecastUpdated | None:
    """The newest (by `as_of`) forecast of `budget_id`, or None when none was published."""
    topic = FORECASTS.name(prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    try:
        await consumer.start()
        found: list[ForecastUpdated] = []
        for partition in range(FORECASTS.partitions):  # the contract fixes the count
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            match = await _scan_backwards(consumer, tp, budget_id, tenant)
            if match is not None:
                found.append(match)
        return max(found, key=lambda event: event.as_of, default=None)
    finally:
        await consumer.stop()


async def _scan_backwards(
    consumer: AIOKafkaConsumer, tp: TopicPartition, budget_id: str, tenant: str | None
) -> ForecastUpdated | None:
    first = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    while end > first:
        start = max(first, end - WINDOW)
        consumer.seek(tp, start)
        best: ForecastUpdated | None = None
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                if record.offset >= end:
                    break
                event = _forecast_of(record.value, budget_id, tenant)
                if event is not None and (best is None or event.as_of >= best.as_of):
                    best = event
        if best is not None:
            return best
        end = start
    return None


def _forecast_of(raw: bytes | None, budget_id: str, tenant: str | None) -> ForecastUpdated | None:
    if raw is None:
        return None
    with contextlib.suppress(AllotmentError):
        event = decode(raw)
        if not isinstance(event, ForecastUpdated) or event.budget_id != budget_id:
            return None
        if tenant is None or event.tenant == tenant:
            return event
    return None
