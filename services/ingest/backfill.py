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

from services.ingest.batch import Rejection, map_records, parse_lines, read_records
from services.ingest.errors import EventsTooLarge, IngestConfigError
from services.ingest.keys import IngestKey
from services.ingest.publisher import UsageSink
from services.ingest.sources import helicone, litellm_spendlogs, native
from services.ingest.sources.base import Draft

FINGERPRINT_BYTES = 64 * 1024

SOURCES: dict[str, Callable[[Any], Draft | None]] = {
    "jsonl": native.to_draft,
    "helicone": helicone.to_draft,
    "litellm-spendlogs": litellm_spendlogs.to_draft,
}


class Reader(Protocol):
    """Batches of records after a cursor; each batch comes with the cursor that follows it."""

    def total(self) -> int | None: ...

    def fingerprint(self, length: int | None = None) -> str | None: ...

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]: ...


@dataclass
class FileReader:
    """A JSON array or JSON-lines file; the cursor is the number of records already done.

    JSON lines are streamed (a month of history need not fit in memory); a JSON array is
    read whole, as it must be to parse it.
    """

    path: Path
    batch_size: int = 500

    def _is_array(self) -> bool:
        with self.path.open("rb") as handle:
            head = handle.read(4096).lstrip()
        return head[:1] == b"["

    def fingerprint(self, length: int | None = None) -> str | None:
        """`<n>:<sha256 of the first n bytes>`, n = min(size, 64 KiB) unless given: a checkpoint
        resumes only onto the file it was written for (appending keeps its first bytes)."""
        with self.path.open("rb") as handle:
            head = handle.read(FINGERPRINT_BYTES if length is None else length)
        return f"{len(head)}:{hashlib.sha256(head).hexdigest()}"

    def total(self) -> int | None:
        if self._is_array():
            return len(read_records(self.path.read_bytes()))
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]:
        done = int(after or 0)
        if self._is_array():
            records = read_records(self.path.read_bytes())
            for begin in range(done, len(records), self.batch_size):
                chunk = records[begin : begin + self.batch_size]
                yield chunk, begin + len(chunk)
            return
        seen = 0
        lines: list[bytes] = []
        with self.path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                seen += 1
                if seen <= done:
                    continue
                lines.append(line)
                if len(lines) == self.batch_size:
                    yield parse_lines(lines), seen
                    lines = []
        if lines:
            yield parse_lines(lines), seen


SPENDLOGS_COLUMNS = (
    "request_id",
    "startTime",
    "call_type",
    "model",
    "model_group",
    "custom_llm_provider",
    "spend",
    "prompt_tokens",
    "completion_tokens",
    "user",
    "end_user",
    "team_id",
    "api_key",
    "request_tags",
    "cache_hit",
    "status",
    "metadata",
)


@dataclass
class SpendLogsReader:
    """`LiteLLM_SpendLogs` in keyset order; the cursor is the last ("startTime", request_id).

    Only the columns the mapper reads are selected (not the stored messages and responses),
    among those the table has: older LiteLLM versions lack some of them.
    """

    dsn: str
    batch_size: int = 500

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        dsn = self.dsn.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(dsn, row_factory=dict_row)

    def fingerprint(self, length: int | None = None) -> str | None:
        """None: the keyset cursor names the rows themselves, whatever else the table holds."""
        return None

    def total(self) -> int | None:
        with self._connect() as conn:
            row = conn.execute('SELECT count(*) AS n FROM "LiteLLM_SpendLogs"').fetchone()
            return int(row["n"]) if row else 0

    def _columns(self, conn: Any) -> str:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'LiteLLM_SpendLogs'"
        ).fetchall()
        present = {r["column_name"] for r in rows}
        missing = {"request_id", "startTime"} - present
        if missing:
            raise IngestConfigError(
                '"LiteLLM_SpendLogs"', f"has no column {', '.join(sorted(missing))}"
            )
        return ", ".join(f'"{c}"' for c in SPENDLOGS_COLUMNS if c in present)

    def batches(self, after: Any) -> Iterator[tuple[list[Any], Any]]:
        cursor = tuple(after) if after else None
        with self._connect() as conn:
            columns = self._columns(conn)
            table = f'SELECT {columns} FROM "LiteLLM_SpendLogs"'
            order = 'ORDER BY "startTime", request_id LIMIT %s'
            while True:
                if cursor is None:
                    rows = conn.execute(f"{table} {order}", (self.batch_size,)).fetchall()
                else:
                    rows = conn.execute(
                        f'{table} WHERE ("startTime", request_id) > (%s::timestamp, %s) {order}',
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


def _same_content(checkpoint: Checkpoint, reader: Reader, recorded: Any) -> None:
    """Refuse to resume onto other content at the same path (a re-export): its cursor would
    skip records that were never imported."""
    if not isinstance(recorded, str) or ":" not in recorded:
        return  # a checkpoint from before fingerprints, or an input without one
    length = recorded.split(":", 1)[0]
    current = reader.fingerprint(int(length) if length.isdecimal() else None)
    if current is not None and current != recorded:
        raise IngestConfigError(
            str(checkpoint.path),
            "was written for other content at this path (the input's first "
            f"{length} bytes changed); pass --restart to import it from the start",
        )


async def run_import(
    reader: Reader,
    to_draft: Callable[[Any], Draft | None],
    key: IngestKey,
    sink: UsageSink,
    checkpoint: Checkpoint,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ImportReport:
    """Import every batch after the checkpoint; the checkpoint moves only after Kafka acked.

    A record whose event is too large for the usage topic even alone is rejected like a
    malformed one (reported, counted): resending it can never succeed, and stopping on it
    would stop every re-run at the same place.
    """
    state = checkpoint.load() or {"cursor": None, "accepted": 0, "rejected": 0, "done": False}
    _same_content(checkpoint, reader, state.get("fingerprint"))
    state["fingerprint"] = reader.fingerprint()
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
        try:
            await sink.publish(batch.events)
        except EventsTooLarge as exc:  # the rest was acknowledged; these can never travel
            batch.reject_events(exc.sizes, exc.limit)
        report.accepted += len(batch.events)
        report.rejected.extend((state["cursor"], r) for r in batch.rejected)
        done_records += len(records)
        state = {
            "cursor": cursor,
            "records": done_records,
            "accepted": int(state["accepted"]) + len(batch.events),
            "rejected": int(state["rejected"]) + len(batch.rejected),
            "done": False,
            "fingerprint": state["fingerprint"],
        }
        checkpoint.save(state)
        if on_progress:
            on_progress(done_records, total)
    checkpoint.save({**state, "done": True})
    return report
