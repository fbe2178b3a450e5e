"""History import into the real broker: resumable after a failure, idempotent when run again.

Sources: a JSON-lines file of native records, a Helicone export file, and a
`LiteLLM_SpendLogs` table (LiteLLM's column names) in the session's PostgreSQL database,
imported through the `allotment import` command.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fakes.kafka_io import read_usage_by_partition
from ingest_support import kafka_sink
from typer.testing import CliRunner

from schemas.usage import UsageRecorded
from services.cli import build
from services.common.usage_producer import ENVELOPE_MAX_BYTES, MAX_EVENT_BYTES
from services.ingest.backfill import Checkpoint, FileReader, input_id, run_import
from services.ingest.errors import PublishUnavailable
from services.ingest.keys import IngestKey
from services.ingest.publisher import KafkaUsageSink
from services.ingest.sources import helicone, native
from services.ingest.sources.base import scoped_event_id

KEY = IngestKey("import", "acme", "0" * 64)


class FailingOnce:
    """The real sink, except that its `fail_on`-th publish fails as if Kafka were down."""

    def __init__(self, sink: KafkaUsageSink, fail_on: int) -> None:
        self.sink = sink
        self.fail_on = fail_on
        self.calls = 0

    async def publish(self, events: Sequence[UsageRecorded]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise PublishUnavailable("injected: broker unreachable")
        await self.sink.publish(events)

    async def stop(self) -> None:
        await self.sink.stop()


def _native_file(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    run = uuid.uuid4().hex[:8]
    ids = [f"{run}-{i}" for i in range(n)]
    lines = [
        orjson.dumps(
            {
                "source_request_id": rid,
                "occurred_at": f"2026-10-{1 + i % 28:02d}T12:00:00Z",
                "input_uncached": 100 + i,
                "output": 10,
                "team": "core",
            }
        )
        for i, rid in enumerate(ids)
    ]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, ids


async def test_jsonl_import_resumes_after_a_failure_and_is_idempotent(
    kafka_bootstrap, topic_prefix, tmp_path
):
    path, ids = _native_file(tmp_path, 25)
    reader = FileReader(path, batch_size=10)
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))

    flaky = FailingOnce(kafka_sink(kafka_bootstrap, topic_prefix), fail_on=2)
    with pytest.raises(PublishUnavailable):
        await run_import(reader, native.to_draft, KEY, flaky, marker)
    await flaky.stop()
    assert marker.load()["cursor"] == 10  # the first batch was acknowledged, the second not

    sink = kafka_sink(kafka_bootstrap, topic_prefix)
    try:
        resumed = await run_import(reader, native.to_draft, KEY, sink, marker)
        assert (resumed.resumed_from, resumed.accepted) == (10, 15)
        again = await run_import(reader, native.to_draft, KEY, sink, marker)
        assert again.already_done and again.accepted == 0
    finally:
        await sink.stop()

    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=25)
    assert len(on_topic) == 25  # nothing published twice across the failure and the rerun
    assert {e.event_id for _, e in on_topic} == {scoped_event_id("native", "acme", i) for i in ids}

    marker.clear()  # a rerun without its checkpoint republishes the same events, same ids
    sink = kafka_sink(kafka_bootstrap, topic_prefix)
    try:
        await run_import(reader, native.to_draft, KEY, sink, marker)
    finally:
        await sink.stop()
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=50)
    assert len(on_topic) == 50
    assert len({e.event_id for _, e in on_topic}) == 25


async def test_a_record_too_large_for_the_topic_is_rejected_and_the_import_goes_on(
    kafka_bootstrap, topic_prefix, tmp_path
):
    """Review 3B, finding 2: such a record stopped the import, and every re-run, on its batch."""
    run = uuid.uuid4().hex[:8]
    lines = [
        orjson.dumps(
            {
                "source_request_id": f"{run}-{i}",
                "occurred_at": "2026-10-01T10:00:00Z",
                "output": 100,
                "properties": {"prompt": "x" * (MAX_EVENT_BYTES if i == 12 else 10)},
            }
        )
        for i in range(25)
    ]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))
    sink = kafka_sink(kafka_bootstrap, topic_prefix)
    try:
        report = await run_import(FileReader(path, 10), native.to_draft, KEY, sink, marker)
    finally:
        await sink.stop()
    assert report.accepted == 24
    [(cursor, rejection)] = report.rejected
    assert (cursor, rejection.index, rejection.field) == (10, 2, "(record)")
    assert f"the usage topic takes {ENVELOPE_MAX_BYTES}" in rejection.rule
    state = marker.load()
    assert (state["done"], state["accepted"], state["rejected"]) == (True, 24, 1)
    on_topic = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=24)
    wanted = {scoped_event_id("native", "acme", f"{run}-{i}") for i in range(25) if i != 12}
    assert {e.event_id for _, e in on_topic} == wanted and len(on_topic) == 24


async def test_helicone_export_file_imports_with_its_cache_columns(
    kafka_bootstrap, topic_prefix, tmp_path
):
    rows = [
        {
            "request_id": str(uuid.uuid4()),
            "request_created_at": "2026-10-03T08:15:00.000Z",
            "request_model": "claude-sonnet-4",
            "provider": "ANTHROPIC",
            "prompt_tokens": 40,
            "prompt_cache_read_tokens": 3000,
            "prompt_cache_write_tokens": 120,
            "completion_tokens": 200,
            "properties": {"Feature": "triage"},
            "costUSD": 0.0123,
        },
        {"request_id": "", "prompt_tokens": 1},
    ]
    path = tmp_path / "helicone.json"
    path.write_bytes(orjson.dumps(rows))
    marker = Checkpoint(tmp_path / "h.json", input_id("helicone", str(path)))
    sink = kafka_sink(kafka_bootstrap, topic_prefix)
    try:
        report = await run_import(FileReader(path), helicone.to_draft, KEY, sink, marker)
    finally:
        await sink.stop()
    assert report.accepted == 1
    assert [(r.index, r.field) for _, r in report.rejected] == [(1, "request_id")]
    [(_, event)] = await read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=1)
    assert (event.input_uncached, event.cache_read, event.cache_write, event.output) == (
        40,
        3000,
        120,
        200,
    )
    assert event.occurred_at.isoformat() == "2026-10-03T08:15:00+00:00"
    assert event.cost_micros == 12_300


SPENDLOGS_DDL = """
CREATE TABLE "LiteLLM_SpendLogs" (
    request_id text PRIMARY KEY,
    call_type text NOT NULL,
    api_key text NOT NULL DEFAULT '',
    spend double precision NOT NULL DEFAULT 0.0,
    total_tokens integer NOT NULL DEFAULT 0,
    prompt_tokens integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    "startTime" timestamp(3) NOT NULL,
    "endTime" timestamp(3) NOT NULL,
    "completionStartTime" timestamp(3),
    model text NOT NULL DEFAULT '',
    model_id text DEFAULT '',
    model_group text DEFAULT '',
    custom_llm_provider text DEFAULT '',
    api_base text DEFAULT '',
    "user" text DEFAULT '',
    metadata jsonb DEFAULT '{}',
    cache_hit text DEFAULT '',
    cache_key text DEFAULT '',
    request_tags jsonb DEFAULT '[]',
    team_id text,
    end_user text,
    requester_ip_address text,
    messages jsonb DEFAULT '{}',
    response jsonb DEFAULT '{}',
    session_id text,
    status text
)
"""


def _spendlog_rows(n: int) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    rows = []
    for i in range(n):
        metadata = {
            "user_api_key_team_alias": "support",
            "additional_usage_values": {
                "cache_read_input_tokens": 500,
                "cache_creation_input_tokens": 20,
                "completion_tokens_details": {"reasoning_tokens": 5},
            },
        }
        rows.append(
            {
                "request_id": f"chatcmpl-{run}-{i:03d}",
                "call_type": "acompletion",
                "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                "spend": 0.002,
                "total_tokens": 600 + 30,
                "prompt_tokens": 600,
                "completion_tokens": 30,
                "startTime": f"2026-10-{1 + i % 28:02d} 09:00:{i % 60:02d}",
                "endTime": f"2026-10-{1 + i % 28:02d} 09:01:00",
                "model": "claude-sonnet-4-20250514",
                "model_group": "claude-sonnet",
                "custom_llm_provider": "anthropic",
                "metadata": orjson.dumps(metadata).decode(),
                "cache_hit": "False",
                "request_tags": '["backfill"]',
                "team_id": "team-1",
                "end_user": f"user-{i % 3}",
                "status": "success",
            }
        )
    return rows


def test_litellm_spendlogs_import_through_the_cli(
    kafka_bootstrap, topic_prefix, database_url, tmp_path
):
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    rows = _spendlog_rows(23)
    columns = list(rows[0])
    quoted = ", ".join(f'"{c}"' for c in columns)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DROP TABLE IF EXISTS "LiteLLM_SpendLogs"')
        conn.execute(SPENDLOGS_DDL)
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "LiteLLM_SpendLogs" ({quoted}) VALUES '
                f"({', '.join(['%s'] * len(columns))})",
                [tuple(r[c] for c in columns) for r in rows],
            )
    checkpoint = tmp_path / "spendlogs.json"
    env = {"ALLOTMENT_KAFKA_BOOTSTRAP": kafka_bootstrap, "ALLOTMENT_TOPIC_PREFIX": topic_prefix}
    args = [
        "import",
        "--from",
        "litellm-spendlogs",
        database_url,
        "--tenant",
        "acme",
        "--checkpoint",
        str(checkpoint),
        "--batch-size",
        "10",
    ]
    try:
        runner = CliRunner()
        first = runner.invoke(build(), args, env=env)
        assert first.exit_code == 0, first.output
        assert "imported 23 events, rejected 0" in first.output
        second = runner.invoke(build(), args, env=env)
        assert second.exit_code == 0, second.output
        assert "already imported" in second.output
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('DROP TABLE IF EXISTS "LiteLLM_SpendLogs"')

    on_topic = asyncio.run(read_usage_by_partition(kafka_bootstrap, topic_prefix, expected=23))
    assert len(on_topic) == 23
    assert {e.event_id for _, e in on_topic} == {
        scoped_event_id("litellm", "acme", r["request_id"]) for r in rows
    }
    event = on_topic[0][1]
    assert (event.input_uncached, event.cache_read, event.cache_write) == (80, 500, 20)
    assert (event.output, event.reasoning, event.cost_micros) == (30, 5, 2000)
    assert (event.team, event.tags, event.provider) == ("support", ["backfill"], "anthropic")
    assert event.occurred_at.tzinfo is not None and event.occurred_at.month == 10
