"""What arrives twice, late or broken: redelivered usage, late events, poison records.

Each test runs a real `allotment worker` against the real broker under its own topic prefix and
reads the results back from Kafka. Expected numbers are summed here from the produced events.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    ledgers,
    publish_budgets,
    read_all,
    scrape,
    send_raw,
    send_usage,
    usage,
    wait_for,
)

from schemas.topics import DEAD_LETTER, USAGE
from services.common.kafka import partition_for


def _period(found: dict[str, dict], budget_id: str, key: str) -> dict[str, int]:
    return dict(found.get(budget_id, {}).get("state", {}).get("periods", {}).get(key, {}))


async def test_redelivered_usage_is_counted_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "redeliver-co"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, "rd-all", {"name": "all", "limits": {"total_tokens": 10**12}})],
    )
    at = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
    events = [usage(f"rd-{i}", tenant, at, 10 + i % 7, 3 + i % 5) for i in range(5000)]
    again = events[::10]  # 10 percent, published a second time at new offsets
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, events, size=250)
        half = len(again) // 2
        # One half alone, keyed by event_id as a third-party producer sends; one half packed.
        singles = [(e["event_id"].encode(), orjson.dumps(e)) for e in again[:half]]
        await send_raw(kafka_bootstrap, USAGE.name(topic_prefix), singles)
        await send_usage(kafka_bootstrap, topic_prefix, again[half:], size=100)
        truth_total = sum(e["input_uncached"] + e["output"] for e in events)

        async def settled() -> dict[str, float] | None:
            metrics = scrape(worker)
            seen = metrics.get("allotment_worker_events_in_total", 0)
            return metrics if seen >= len(events) + len(again) else None

        await wait_for(settled, 60, [worker])

        async def applied() -> dict[str, int]:
            period = _period(await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline"),
                             "rd-all", "2026-11")  # fmt: skip
            return period if period.get("events") == len(events) else {}

        period = await wait_for(applied, 60, [worker])
        assert period["total"] == truth_total
        assert scrape(worker)["allotment_worker_duplicates_dropped_total"] == len(again)
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_late_events_land_in_their_period_or_are_reported(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "late-co"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, "late-daily", {
            "name": "daily", "limits": {"total_tokens": 10**9},
            "period": {"kind": "day", "timezone": "UTC"},
        })],
    )  # fmt: skip
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    app_id = f"{topic_prefix}.pipeline"

    def day(d: int, h: int, m: int = 0) -> datetime:
        return datetime(2026, 11, d, h, m, tzinfo=UTC)

    try:
        worker = workers.start("w1", "--late-window-hours", "1")
        await send_usage(
            kafka_bootstrap,
            topic_prefix,
            [usage(f"late-a{i}", tenant, day(20, 10), 100, 0) for i in range(10)],
        )
        # "Now" moves into the 21st; an event of the 20th within the hour's window follows.
        await send_usage(
            kafka_bootstrap, topic_prefix, [usage("late-b", tenant, day(21, 0, 30), 7, 0)]
        )

        async def day21_seen() -> bool:
            return bool(_period(await ledgers(kafka_bootstrap, app_id), "late-daily", "2026-11-21"))

        await wait_for(day21_seen, 90, [worker])
        await send_usage(
            kafka_bootstrap, topic_prefix, [usage("late-c", tenant, day(20, 23, 50), 50, 0)]
        )

        async def charged_to_20th() -> bool:
            found = _period(await ledgers(kafka_bootstrap, app_id), "late-daily", "2026-11-20")
            return found.get("total") == 10 * 100 + 50

        await wait_for(charged_to_20th, 60, [worker])
        # Now 05:00 on the 21st: the 20th closed more than an hour ago; its next event is late.
        await send_usage(kafka_bootstrap, topic_prefix, [usage("late-d", tenant, day(21, 5), 9, 0)])

        async def moved_on() -> bool:
            found = _period(await ledgers(kafka_bootstrap, app_id), "late-daily", "2026-11-21")
            return found.get("total") == 7 + 9

        await wait_for(moved_on, 60, [worker])
        await send_usage(
            kafka_bootstrap, topic_prefix, [usage("late-e", tenant, day(20, 22), 1000, 0)]
        )

        async def reported() -> dict:
            state = (await ledgers(kafka_bootstrap, app_id))["late-daily"]["state"]
            return state if state["late_events"] == 1 else {}

        state = await wait_for(reported, 60, [worker])
        assert state["late_tokens"] == 1000
        assert state["periods"]["2026-11-21"]["total"] == 7 + 9
        assert (
            "2026-11-20" not in state["periods"] or state["periods"]["2026-11-20"]["total"] == 1050
        )
        assert scrape(worker)["allotment_worker_late_events_total"] == 1
        assert "late events counted, not charged" in worker.log_path.read_text()
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)


async def test_poison_records_go_to_dead_letter_and_the_stream_goes_on(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = "poison-co"
    await publish_budgets(
        kafka_bootstrap,
        topic_prefix,
        [budget_event(tenant, "poison-all", {"name": "all", "limits": {"total_tokens": 10**9}})],
    )
    at = datetime(2026, 11, 19, 8, 0, tzinfo=UTC)
    topic = USAGE.name(topic_prefix)
    bad_tokens = usage("poison-neg", tenant, at, -5, 1)
    garbage = b"\x00\xff not json at all"
    first_good = [usage(f"poison-a{i}", tenant, at, 11, 1) for i in range(20)]
    later_good = [usage(f"poison-b{i}", tenant, at, 13, 1) for i in range(20)]
    # An envelope with one broken event among good ones, for the first good event's partition.
    home = partition_for("poison-env-0", USAGE.partitions)
    envelope_events = [usage("poison-env-0", tenant, at, 5, 0), {**usage("x", tenant, at, 1, 0),
                       "event_id": "", "tenant": "bad tenant!"}]  # fmt: skip
    envelope = orjson.dumps({"type": "UsageBatch", "version": 1, "events": envelope_events})
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start()
        await send_usage(kafka_bootstrap, topic_prefix, first_good)
        await send_raw(kafka_bootstrap, topic, [
            (b"garbage", garbage),
            (b"poison-neg", orjson.dumps(bad_tokens)),
            (b"wrong-type", orjson.dumps({"type": "Nonsense", "version": 1})),
        ])  # fmt: skip
        producer_records = [(b"env", envelope)]
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in producer_records:
                await producer.send_and_wait(topic, value, key=key, partition=home)
        finally:
            await producer.stop()
        await send_usage(kafka_bootstrap, topic_prefix, later_good)
        expected = sum(e["input_uncached"] + e["output"] for e in first_good + later_good) + 5

        async def applied() -> bool:
            found = _period(await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline"),
                            "poison-all", "2026-11")  # fmt: skip
            return found.get("total") == expected

        await wait_for(applied, 90, [worker])

        async def dead() -> list[dict]:
            records = await read_all(kafka_bootstrap, DEAD_LETTER.name(topic_prefix))
            return [orjson.loads(r.value) for r in records] if len(records) >= 4 else []

        letters = await wait_for(dead, 30, [worker])
        assert len(letters) == 4
        assert all(d["topic"] == topic and d["offset"] >= 0 for d in letters)
        by_payload = {base64.b64decode(d["payload_b64"]): d for d in letters}
        assert "is not JSON" in by_payload[garbage]["reason"]
        neg = by_payload[orjson.dumps(bad_tokens)]
        assert any(e.startswith("input_uncached") for e in neg["errors"]), neg
        assert any("Nonsense" in d["reason"] for d in letters)
        in_envelope = [d for d in letters if "envelope index 1" in d["reason"]]
        assert len(in_envelope) == 1 and in_envelope[0]["partition"] == home
        assert any(e.startswith("tenant") for e in in_envelope[0]["errors"])
        assert worker.alive()
        assert scrape(worker)["allotment_worker_dead_letters_total"] == 4
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
