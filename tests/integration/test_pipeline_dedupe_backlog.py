"""A backlog of enveloped usage: every take's dedupe history fits the changelog.

A take is up to 4,000 usage records; of envelopes of 500 events with uuid ids, one dedupe
record holding all of them was several MB, the broker refused it (MessageSizeTooLargeError),
and the worker exited to read the take again, in a loop while the backlog lasted. Records are
now cut (`RecordCutter`): the worker reads the whole backlog without a restart, and the
changelog holds every id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pipeline_harness import (
    Workers,
    budget_event,
    delete_prefixed_topics,
    latest_by_key,
    ledgers,
    publish_budgets,
    read_all,
    send_usage,
    usage,
    wait_for,
)

AT = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
EVENTS = 240_000
MESSAGE_LIMIT = 1_000_000


async def test_a_backlog_of_envelopes_is_read_without_a_refused_dedupe_record(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = f"backlog-{topic_prefix}"
    await publish_budgets(kafka_bootstrap, topic_prefix, [budget_event(
        tenant, f"{tenant}-all", {"name": "all", "limits": {"total_tokens": 10**13}})])  # fmt: skip
    events = [usage(str(uuid.uuid4()), tenant, AT, 10, 3) for _ in range(EVENTS)]
    await send_usage(kafka_bootstrap, topic_prefix, events, size=500)
    workers = Workers(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        worker = workers.start("w1", "--store", "rocksdb")

        async def counted() -> bool:
            found = await ledgers(kafka_bootstrap, f"{topic_prefix}.pipeline")
            state = found.get(f"{tenant}-all", {}).get("state", {})
            return bool(state.get("periods", {}).get("2026-11", {}).get("events", 0) >= EVENTS)

        await wait_for(counted, 300, [worker])
        log = worker.log_path.read_text(errors="replace")
        assert "MessageSizeTooLarge" not in log
        assert worker.restarts == 0, worker.log_tail()
        changelog = await read_all(kafka_bootstrap, f"{topic_prefix}.pipeline-dedupe-changelog")
        assert all(len(r.value or b"") < MESSAGE_LIMIT for r in changelog)
        held: set[str] = set()
        for value in latest_by_key(changelog).values():
            if value is not None:
                held.update(orjson.loads(value)["ids"])
        assert held == {e["event_id"] for e in events}
    finally:
        workers.close()
        await delete_prefixed_topics(kafka_bootstrap, topic_prefix)
