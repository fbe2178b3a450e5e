"""Backfill readers: streamed JSON lines with a resumable cursor, arrays, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from services.ingest.backfill import Checkpoint, FileReader, input_id
from services.ingest.batch import map_records
from services.ingest.errors import IngestConfigError
from services.ingest.keys import IngestKey
from services.ingest.sources import native

KEY = IngestKey("import", "acme", "0" * 64)


def _write_lines(tmp_path, lines):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_json_lines_are_batched_with_the_count_of_records_done(tmp_path):
    lines = [orjson.dumps({"n": i}) for i in range(5)]
    lines.insert(2, b"{not json")
    lines.insert(4, b"   ")
    reader = FileReader(_write_lines(tmp_path, lines), batch_size=2)
    assert reader.total() == 6
    batches = list(reader.batches(None))
    assert [cursor for _, cursor in batches] == [2, 4, 6]
    assert batches[0][0] == [{"n": 0}, {"n": 1}]
    assert batches[1][0][1] == {"n": 2}
    mapped = map_records(batches[1][0], native.to_draft, KEY, datetime.now(UTC))
    assert (mapped.rejected[0].index, mapped.rejected[0].rule) == (0, "is not valid JSON")
    resumed = list(reader.batches(4))
    assert resumed == [([{"n": 3}, {"n": 4}], 6)]


def test_a_json_array_file_is_read_whole_and_resumes_by_index(tmp_path):
    path = tmp_path / "export.json"
    path.write_bytes(orjson.dumps([{"n": i} for i in range(3)]))
    reader = FileReader(path, batch_size=2)
    assert reader.total() == 3
    assert list(reader.batches(2)) == [([{"n": 2}], 3)]


def test_a_checkpoint_belongs_to_one_input(tmp_path):
    marker = Checkpoint(tmp_path / "cp.json", input_id("jsonl", "a.jsonl"))
    assert marker.load() is None
    marker.save({"cursor": 10, "accepted": 10, "rejected": 0, "done": False})
    assert marker.load()["cursor"] == 10
    other = Checkpoint(tmp_path / "cp.json", input_id("jsonl", "b.jsonl"))
    with pytest.raises(IngestConfigError):
        other.load()
    assert input_id("litellm-spendlogs", "postgresql://u:secret@h/db").count("secret") == 0
