"""Reading a request body into records, and mapping each record on its own.

One bad record never sinks a batch: each gets its own (index, field, rule), the valid ones go
on. Bodies are JSON (an array, or one object) or JSON lines; a JSON-lines line that does not
parse is one rejected record, not a rejected request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.usage import UsageRecorded
from services.ingest.errors import BadPayload, RecordRejected
from services.ingest.keys import IngestKey
from services.ingest.sources.base import Draft, build_event

log = logging.getLogger(__name__)

MAX_RECORDS = 10_000
SLICE = 100
_NOT_JSON = object()


@dataclass(frozen=True)
class Rejection:
    index: int
    field: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "rule": self.rule}


@dataclass
class MappedBatch:
    """Accepted events with their record index, and one rejection per bad record."""

    events: list[UsageRecorded] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    size: int = 0

    def reject_events(self, sizes: Mapping[str, int], limit: int) -> None:
        """Move the events named in `sizes` (encoded bytes) to the rejections."""
        pairs = list(zip(self.indices, self.events, strict=True))
        self.indices = [index for index, event in pairs if event.event_id not in sizes]
        self.events = [event for _, event in pairs if event.event_id not in sizes]
        for index, event in pairs:
            if event.event_id in sizes:
                rule = f"encodes to {sizes[event.event_id]} bytes; the usage topic takes {limit}"
                self.rejected.append(Rejection(index, "(record)", rule))
        self.rejected.sort(key=lambda rejection: rejection.index)

    def event_ids(self) -> list[str | None]:
        ids: list[str | None] = [None] * self.size
        for index, event in zip(self.indices, self.events, strict=True):
            ids[index] = event.event_id
        return ids


def read_records(body: bytes, content_type: str = "") -> list[Any]:
    """A JSON array, a single JSON object, or JSON lines; raises `BadPayload` for anything else."""
    if not body.strip():
        return []
    lines_declared = (
        "ndjson" in content_type or "jsonl" in content_type or ("json-seq" in content_type)
    )
    if not lines_declared:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = _NOT_JSON
        if document is not _NOT_JSON:
            records = document if isinstance(document, list) else [document]
            return _bounded(records)
    records = parse_lines(body.splitlines())
    if records and all(r is _NOT_JSON for r in records):
        raise BadPayload("body is neither JSON nor JSON lines")
    return _bounded(records)


def parse_lines(lines: list[bytes]) -> list[Any]:
    """JSON lines, blank ones dropped; a line that does not parse stays, marked, to be
    rejected on its own by `map_records`."""
    records: list[Any] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            records.append(_NOT_JSON)
    return records


def _bounded(records: list[Any]) -> list[Any]:
    if len(records) > MAX_RECORDS:
        raise BadPayload(f"at most {MAX_RECORDS} records per request (got {len(records)})")
    return records


def map_records(
    records: list[Any],
    to_draft: Callable[[Any], Draft | None],
    key: IngestKey,
    received_at: datetime,
    into: MappedBatch | None = None,
    start: int = 0,
    stop: int | None = None,
) -> MappedBatch:
    """Map records[start:stop] into `into` (a new batch by default), each on its own.

    A mapper returning None means "carries no usage": skipped, not an error. Mapping a long
    body in slices lets an async caller yield between them (see `map_in_slices`).
    """
    result = into if into is not None else MappedBatch(size=len(records))
    for index in range(start, len(records) if stop is None else min(stop, len(records))):
        record = records[index]
        if record is _NOT_JSON:
            result.rejected.append(Rejection(index, "(record)", "is not valid JSON"))
            continue
        try:
            draft = to_draft(record)
            if draft is None:
                continue
            event = build_event(draft, key, received_at)
        except RecordRejected as exc:
            result.rejected.append(Rejection(index, exc.field, exc.rule))
            continue
        except Exception as exc:
            # A mapper missed a check: this record is rejected, never the whole batch (the
            # explicit checks name the field; this names the record and logs the cause).
            log.exception("ingest: record %d failed to map; rejected", index)
            result.rejected.append(
                Rejection(index, "(record)", f"could not be read ({type(exc).__name__})")
            )
            continue
        result.events.append(event)
        result.indices.append(index)
    return result


async def map_in_slices(
    records: list[Any],
    to_draft: Callable[[Any], Draft | None],
    key: IngestKey,
    received_at: datetime,
    slice_size: int = SLICE,
) -> MappedBatch:
    """`map_records` that yields to the event loop between slices.

    Mapping is CPU work; done in one go it would hold the loop for the whole body, and the
    Kafka client (on the same loop) could neither send other requests' envelopes nor read
    their acknowledgements meanwhile.
    """
    result = MappedBatch(size=len(records))
    for start in range(0, len(records), slice_size):
        map_records(records, to_draft, key, received_at, result, start, start + slice_size)
        if start + slice_size < len(records):
            await asyncio.sleep(0)
    return result
