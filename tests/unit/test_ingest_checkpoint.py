"""A history import's checkpoint resumes only onto the file it was written for, finished or
not, and one written before digests is resumed rather than refused."""

from __future__ import annotations

import hashlib
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


def _input(tmp_path: Path, name: str = "history.jsonl") -> tuple[Path, Checkpoint]:
    path = tmp_path / name
    return path, Checkpoint(tmp_path / "cp.json", input_id("jsonl", str(path)))


async def _interrupted(path: Path, marker: Checkpoint, at: int = 600) -> None:
    with pytest.raises(RuntimeError):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(at), marker)
    assert marker.load()["cursor"] == at


async def test_a_new_file_at_the_same_path_is_refused_not_resumed(tmp_path):
    path, marker = _input(tmp_path)
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
    path, marker = _input(tmp_path)
    _write(path, "old", 700)
    await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    sink = _Sink()
    again = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert again.already_done and sink.events == []
    for tag, n in (("new", 700), ("old", 100)):  # other records; a file shorter than imported
        _write(path, tag, n)
        with pytest.raises(IngestConfigError, match="other content"):
            await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


async def test_records_appended_to_the_same_file_still_resume(tmp_path):
    path, marker = _input(tmp_path)
    _write(path, "log", 1000)
    await _interrupted(path, marker)
    _write(path, "log", 200, start=1000, mode="ab")
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert (report.resumed_from, report.accepted) == (600, 600)
    assert sink.events[0].source_request_id == "log-600"


async def test_late_records_inserted_before_the_cursor_are_refused_not_skipped(tmp_path):
    """Review 3B, finding 4: a re-export with the same first 64 KiB but 200 late records
    inserted in time order resumed at the old cursor and never imported them."""
    path, marker = _input(tmp_path)
    _write(path, "r", 3000)
    await _interrupted(path, marker, at=2400)
    _write(path, "r", 1500)  # the same first 1500 records: far more than 64 KiB
    _write(path, "late", 200, mode="ab")
    _write(path, "r", 1500, start=1500, mode="ab")
    assert path.stat().st_size > 64 * 1024 * 2
    with pytest.raises(IngestConfigError, match="first 2400 records changed") as caught:
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    assert caught.value.where == str(marker.path)

    marker.clear()  # --restart
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    ids = {e.source_request_id for e in sink.events}
    assert report.accepted == 3200 and {f"late-{i}" for i in range(200)} <= ids


async def test_a_record_changed_in_place_before_the_cursor_is_refused(tmp_path):
    path, marker = _input(tmp_path)
    _write(path, "log", 3000)
    await _interrupted(path, marker, at=2400)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2399] = lines[2399].replace(b'"output":100', b'"output":999')  # the last imported
    assert len(b"".join(lines[:2399])) > 64 * 1024
    path.write_bytes(b"".join(lines))
    with pytest.raises(IngestConfigError, match="other content"):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


async def test_a_json_array_resumes_onto_appended_records_and_refuses_a_changed_head(tmp_path):
    path, marker = _input(tmp_path, "history.json")
    record = {"occurred_at": "2026-10-01T10:00:00Z", "output": 100}
    rows = [{**record, "source_request_id": f"a-{i}"} for i in range(1000)]
    path.write_bytes(orjson.dumps(rows))
    await _interrupted(path, marker)

    path.write_bytes(orjson.dumps([*rows, {**record, "source_request_id": "a-1000"}]))
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert (report.resumed_from, report.accepted) == (600, 401)

    marker.clear()
    await _interrupted(path, marker)
    path.write_bytes(orjson.dumps([{**record, "source_request_id": "new"}, *rows]))
    with pytest.raises(IngestConfigError, match="other content"):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


def _legacy(marker: Checkpoint, path: Path, cursor: int, done: bool, head: int = 65536) -> None:
    """A checkpoint as the version before digests wrote it: a fingerprint of the first bytes."""
    first = path.read_bytes()[:head]
    fingerprint = f"{len(first)}:{hashlib.sha256(first).hexdigest()}"
    state = {"cursor": cursor, "records": cursor, "accepted": cursor, "rejected": 0, "done": done}
    marker.save({**state, "fingerprint": fingerprint})


async def test_a_finished_import_from_before_digests_is_still_done_not_refused(tmp_path):
    """Review 6, finding 5: it was refused with `--restart`, which counts every record again
    once the pipeline's 7-day dedupe window has passed."""
    path, marker = _input(tmp_path)
    _write(path, "log", 1000)
    _legacy(marker, path, 1000, done=True)
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert report.already_done and sink.events == []
    assert str(marker.load()["digest"]).startswith("sha256:")  # checked from now on
    _write(path, "new", 1000)
    with pytest.raises(IngestConfigError, match="other content"):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


async def test_an_unfinished_import_from_before_digests_resumes_with_a_warning(tmp_path, caplog):
    path, marker = _input(tmp_path)
    _write(path, "log", 1000)
    _legacy(marker, path, 600, done=False)
    sink = _Sink(fail_after=300)  # interrupted again after one batch
    with pytest.raises(RuntimeError):
        await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert sink.events[0].source_request_id == "log-600"
    assert "without a digest" in caplog.text and "cannot be detected" in caplog.text
    assert marker.load()["cursor"] == 900 and "digest" in marker.load()

    caplog.clear()
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert (report.resumed_from, report.accepted) == (900, 100) and "digest" not in caplog.text


async def test_a_checkpoint_from_before_digests_still_checks_its_first_bytes(tmp_path):
    path, marker = _input(tmp_path)
    _write(path, "old", 1000)
    _legacy(marker, path, 600, done=False)
    _write(path, "new", 1000)  # a re-export to the same path
    with pytest.raises(IngestConfigError, match=r"first 65536 bytes changed.*--restart"):
        await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)


async def test_records_appended_after_a_finished_import_are_imported_on_a_rerun(tmp_path):
    """Review 6, finding 6: a finished import run again reported "already done" and never
    imported the records appended since."""
    path, marker = _input(tmp_path)
    _write(path, "log", 1000)
    await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    _write(path, "log", 200, start=1000, mode="ab")
    sink = _Sink()
    report = await run_import(FileReader(path, 300), native.to_draft, KEY, sink, marker)
    assert not report.already_done and (report.resumed_from, report.accepted) == (1000, 200)
    assert [e.source_request_id for e in sink.events] == [f"log-{i}" for i in range(1000, 1200)]
    again = await run_import(FileReader(path, 300), native.to_draft, KEY, _Sink(), marker)
    assert again.already_done and marker.load()["cursor"] == 1200
