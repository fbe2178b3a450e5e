"""History import: last month's usage from a file or LiteLLM's SpendLogs, resumable and idempotent.

Records are read in batches, mapped by the same source mappers as the live endpoints, and
published through the same sink (acknowledged by Kafka before the checkpoint moves). The
checkpoint file records how far the input was imported; a rerun resumes after it, and a
finished import run again publishes nothing. Even without a checkpoint a rerun is harmless:
event ids derive from the source's request ids, so the pipeline drops the copies.

Inputs: `jsonl` (native records, JSON lines or a JSON array), `helicone` (rows of Helicone's
export, JSON or JSON lines) and `litellm-spendlogs` (a PostgreSQL DSN with the
`LiteLLM_SpendLogs` table, read in keyset order of ("startTime", request_id)).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from services.ingest.batch import Rejection, map_records, read_records
from services.ingest.errors import IngestConfigError
from services.ingest.keys import IngestKey
from services.ingest.publisher import UsageSink
from services.ingest.sources import helicone, litellm_spendlogs, native
from services.ingest.sources.base import Draft

SOURCES: dict[str, Callable[[Any], Draft | None]] = {
    "jsonl": native.to_draft,
    "helicone": helicone.to_draft,
    "litellm-spendlogs": litellm_spendlogs.to_draft,
}


class Reader(Protocol):
    """Batches of records after a cursor; each batch comes with the cursor that follows it."""

    def total(self) -> int | None: ...

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]: ...


@dataclass
class FileReader:
    """A JSON array or JSON-lines file; the cursor is the number of records already done."""

    path: Path
    batch_size: int = 500
    _records: list[Any] | None = None

    def _all(self) -> list[Any]:
        if self._records is None:
            body = self.path.read_bytes()
            self._records = read_records(body, "" if body.lstrip()[:1] == b"[" else "ndjson")
        return self._records

    def total(self) -> int | None:
        return len(self._all())

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]:
        records = self._all()
        start = int(after or 0)
        for begin in range(start, len(records), self.batch_size):
            chunk = records[begin : begin + self.batch_size]
            yield chunk, begin + len(chunk)


@dataclass
class SpendLogsReader:
    """`LiteLLM_SpendLogs` in keyset order; the cursor is the last ("startTime", request_id)."""

    dsn: str
    batch_size: int = 500

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        dsn = self.dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(dsn, row_factory=dict_row)

    def total(self) -> int | None:
        with self._connect() as conn:
            row = conn.execute('SELECT count(*) AS n FROM "LiteLLM_SpendLogs"').fetchone()
            return int(row["n"]) if row else 0

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]:
        cursor = tuple(after) if after else None
        with self._connect() as conn:
            while True:
                if cursor is None:
                    rows = conn.execute(
                        'SELECT * FROM "LiteLLM_SpendLogs" ORDER BY "startTime", request_id '
                        "LIMIT %s",
                        (self.batch_size,),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        'SELECT * FROM "LiteLLM_SpendLogs" WHERE ("startTime", request_id) > '
                        '(%s::timestamp, %s) ORDER BY "startTime", request_id LIMIT %s',
                        (cursor[0], cursor[1], self.batch_size),
                    ).fetchall()
                if not rows:
                    return
                last = rows[-1]
                cursor = (last["startTime"].isoformat(), last["request_id"])
                yield rows, list(cursor)


@dataclass
class Checkpoint:
    """How far one input was imported, written atomically after each acknowledged batch."""

    path: Path
    input_id: str

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        state: dict[str, Any] = orjson.loads(self.path.read_bytes())
        if state.get("input") != self.input_id:
            raise IngestConfigError(
                str(self.path), "belongs to another input; pass --restart or another --checkpoint"
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_bytes(orjson.dumps({**state, "input": self.input_id}))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: list[tuple[Any, Rejection]] = field(default_factory=list)
    resumed_from: Any = None
    already_done: bool = False


def input_id(kind: str, location: str) -> str:
    """A stable name of the input for the checkpoint (the DSN's password never lands on disk)."""
    return f"{kind}:{hashlib.sha256(location.encode()).hexdigest()[:16]}"


async def run_import(
    reader: Reader,
    to_draft: Callable[[Any], Draft | None],
    key: IngestKey,
    sink: UsageSink,
    checkpoint: Checkpoint,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ImportReport:
    """Import every batch after the checkpoint; the checkpoint moves only after Kafka acked."""
    state = checkpoint.load() or {"cursor": None, "accepted": 0, "rejected": 0, "done": False}
    report = ImportReport(resumed_from=state["cursor"], accepted=0)
    if state.get("done"):
        report.already_done = True
        return report
    done_records = int(state.get("records", 0))
    total = reader.total()
    if on_progress:
        on_progress(done_records, total)
    for records, cursor in reader.batches(state["cursor"]):
        batch = map_records(records, to_draft, key, datetime.now(UTC))
        await sink.publish(batch.events)
        report.accepted += len(batch.events)
        report.rejected.extend((state["cursor"], r) for r in batch.rejected)
        done_records += len(records)
        state = {
            "cursor": cursor,
            "records": done_records,
            "accepted": int(state["accepted"]) + len(batch.events),
            "rejected": int(state["rejected"]) + len(batch.rejected),
            "done": False,
        }
        checkpoint.save(state)
        if on_progress:
            on_progress(done_records, total)
    checkpoint.save({**state, "done": True})
    return report
