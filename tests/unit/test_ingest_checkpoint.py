"""A history import's checkpoint resumes only onto the file it was written for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from schemas.usage import UsageRecorded
from services.ingest.backfill import Checkpoint, FileReader, input_id, run_import
from services.ingest.errors import IngestConfigError
from services.ingest.keys import IngestKey
from services.ingest.sources import native

KEY = IngestKey("import", "acme", "0" * 64)


class _Sink:
    """Keeps what it is given; with `fail_after`, refuses once it holds that many."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.events: list[UsageRecorded] = []
        self.fail_after = fail_after

    async def publish(self, events: Sequence[UsageRecorded]) -> None:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise RuntimeError("Kafka went away")
        self.events.extend(events)

    async def stop(self) -> None:
        return None


def _write(path: Path, tag: str, n: int, start: int = 0, mode: str = "wb") -> None:
    with path.open(mode) as handle:
        for i in range(start, start + n):
            record = {"source_request_id": f"{tag}-{i}", "occurred_at": "2026-10-01T10:00:00Z"}
            handle.write(orjson.dumps({**record, "output": 100}) + b"\n")


async def _interrupted(path: Path, marker: Checkpoint) -> None:
    with pytest.raises(RuntimeError):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(600), marker)
    assert marker.load()["cursor"] == 600


async def test_a_new_file_at_the_same_path_is_refused_not_resumed(tmp_path):
    path = tmp_path / "history.jsonl"
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))
    _write(path, "old", 1000)
    await _interrupted(path, marker)

    _write(path, "new", 1000)  # a re-export to the same path
    with pytest.raises(IngestConfigError, match="--restart") as caught:
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    assert caught.value.where == str(marker.path)

    marker.clear()  # what --restart does
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert report.accepted == 1000 and sink.events[0].source_request_id == "new-0"


async def test_a_finished_import_is_not_taken_for_a_new_file(tmp_path):
    path = tmp_path / "history.jsonl"
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))
    _write(path, "old", 10)
    await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    _write(path, "new", 10)
    with pytest.raises(IngestConfigError, match="other content"):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


async def test_records_appended_to_the_same_file_still_resume(tmp_path):
    path = tmp_path / "history.jsonl"
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))
    _write(path, "log", 1000)
    await _interrupted(path, marker)
    _write(path, "log", 200, start=1000, mode="ab")
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert (report.resumed_from, report.accepted) == (600, 600)
    assert sink.events[0].source_request_id == "log-600"
