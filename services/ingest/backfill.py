"""History import: last month's usage from a file or LiteLLM's SpendLogs, resumable and idempotent.

Records are read in batches, mapped by the same source mappers as the live endpoints, and
published through the same sink (acknowledged by Kafka before the checkpoint moves). The
checkpoint file records how far the input was imported (for a file, with a digest of the
records before that point); a rerun resumes after it, finished or not: it publishes the records
added after the cursor since (none: "already done"). A rerun onto a file whose already-imported
part changed is refused (`PrefixChanged`): its cursor would skip records that were never
imported. A checkpoint from before digests is resumed, not refused: `--restart` would count
its records again once the pipeline's 7-day dedupe window has passed. Even without a checkpoint
a rerun within that window is harmless: event ids derive from the source's request ids, so the
pipeline drops the copies.

Inputs: `jsonl` (native records, JSON lines or a JSON array), `helicone` (rows of Helicone's
export, JSON or JSON lines) and `litellm-spendlogs` (a PostgreSQL DSN with the
`LiteLLM_SpendLogs` table, read in keyset order of ("startTime", request_id)).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Generator, Iterator
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

SOURCES: dict[str, Callable[[Any], Draft | None]] = {
    "jsonl": native.to_draft,
    "helicone": helicone.to_draft,
    "litellm-spendlogs": litellm_spendlogs.to_draft,
}


Batches = Generator[tuple[list[Any], Any], None, None]  # (records, the cursor after them)


class Reader(Protocol):
    """Batches of records after a cursor; each batch comes with the cursor that follows it.

    `digest()` names what lies before the last cursor reached (None: the cursor needs no
    check); `batches(after, digest)` raises `PrefixChanged` before its first batch when the
    input before `after` is no longer what `digest` was taken from (None: not checked;
    LEGACY + the old 64 KiB fingerprint: a checkpoint from before digests, checked as far as
    that fingerprint goes).
    """

    def total(self) -> int | None: ...

    def digest(self) -> str | None: ...

    def batches(self, after: Any, digest: str | None = None) -> Batches: ...


LEGACY = "legacy:"
log = logging.getLogger(__name__)


class PrefixChanged(Exception):
    """The input before a checkpoint's cursor differs from what was imported up to it."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class FileReader:
    """A JSON array or JSON-lines file; the cursor is the number of records already done.

    JSON lines are streamed (a month of history need not fit in memory); a JSON array is
    read whole, as it must be to parse it. The digest is a SHA-256 over every record before
    the cursor (a line's bytes, or an array element's compact JSON), so a resume accepts
    records appended after the cursor and refuses any change to the part already imported: a
    re-export with other records, or with late records inserted in time order.
    """

    path: Path
    batch_size: int = 500
    _hash: Any = field(default=None, init=False, repr=False)

    def _is_array(self) -> bool:
        with self.path.open("rb") as handle:
            head = handle.read(4096).lstrip()
        return head[:1] == b"["

    def digest(self) -> str | None:
        return f"sha256:{self._hash.hexdigest()}" if self._hash is not None else None

    def total(self) -> int | None:
        if self._is_array():
            return len(read_records(self.path.read_bytes()))
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    def _items(self) -> Iterator[tuple[bytes, Any]]:
        """(the bytes the digest covers, the record or its line) for each record in order."""
        if self._is_array():
            for record in read_records(self.path.read_bytes()):
                yield orjson.dumps(record), record
            return
        with self.path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    yield line.strip(), line

    def _check_legacy(self, done: int, fingerprint: str) -> None:
        """A checkpoint from before digests: only its first bytes' fingerprint (if it has one)
        can be checked. It resumes with a warning; the caller records a digest from then on."""
        length, _, _ = fingerprint.partition(":")
        if length.isdecimal():
            with self.path.open("rb") as handle:
                head = handle.read(int(length))
            if f"{len(head)}:{hashlib.sha256(head).hexdigest()}" != fingerprint:
                raise PrefixChanged(
                    f"was written for other content at this path (its first {length} bytes changed)"
                )
        log.warning(
            "%s: the checkpoint was written by an older version, without a digest of the %d "
            "records it imported, so a change to them cannot be detected (%s); resuming after "
            "them, and recording their digest from now on",
            self.path,
            done,
            f"only the first {length} bytes were checked" if length.isdecimal() else "unchecked",
        )

    def batches(self, after: Any, digest: str | None = None) -> Batches:
        done = int(after or 0)
        self._hash = hashlib.sha256()
        items = self._items()
        seen = 0
        for raw, _ in itertools.islice(items, done):  # the records already imported
            self._hash.update(raw + b"\n")
            seen += 1
        if done and digest is not None and digest.startswith(LEGACY):
            self._check_legacy(done, digest.removeprefix(LEGACY))
            digest = None
        if seen < done or (done and digest is not None and digest != self.digest()):
            raise PrefixChanged(
                f"was written for other content at this path (its first {done} records changed)"
            )
        array = self._is_array()
        chunk: list[Any] = []
        for raw, item in items:
            self._hash.update(raw + b"\n")
            seen += 1
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield (chunk if array else parse_lines(chunk)), seen
                chunk = []
        if chunk:
            yield (chunk if array else parse_lines(chunk)), seen


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

    def digest(self) -> str | None:
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

    def batches(self, after: Any, digest: str | None = None) -> Batches:
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
    report = ImportReport(resumed_from=state["cursor"], accepted=0)
    done_records = int(state.get("records", 0))
    recorded = state.get("digest", LEGACY + str(state.get("fingerprint") or ""))
    batches = reader.batches(state["cursor"], recorded)
    finished, resumed = bool(state.get("done")), False
    try:
        total = reader.total()
        if on_progress:
            on_progress(done_records, total)
        for records, cursor in batches:  # after a finished import: the records added since
            resumed = True
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
                "digest": reader.digest(),
            }
            checkpoint.save(state)
            if on_progress:
                on_progress(done_records, total)
    except PrefixChanged as exc:
        raise IngestConfigError(
            str(checkpoint.path), f"{exc.reason}; pass --restart to import it from the start"
        ) from exc
    finally:
        batches.close()
    report.already_done = finished and not resumed
    checkpoint.save({**state, "done": True, "digest": reader.digest()})  # a legacy one gets one
    return report
