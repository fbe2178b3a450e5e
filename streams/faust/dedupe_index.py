"""The dedupe index on disk: one local RocksDB per owned usage partition.

The in-memory index costs about 250 bytes per event id held, and it holds every id of the
window: 50 events/s for 7 days is about 30M ids, 7.5 GB of heap, rebuilt on every recovery.
This one keeps the same mapping in RocksDB (rocksdict, which the table stores use already)
under the worker's store directory, so memory is bounded by RocksDB's write buffers and block
cache, whatever the window holds.

Layout of the database of usage partition p (`<store_dir>/<app id>-dedupe-index/usage-<p>`):
- `v` -> the layout's version (`FORMAT`); a database without it (or with another) was written
  by an older worker and is rebuilt from the table at the next recovery;
- `e<event_id>` -> first sighting, packed (offset, index, record time);
- `r<span>` (first offset, first index, last offset, last index, big endian, so in position
  order) -> record time, then the batch record's table key: the batch keys the index reflects
  and the expiry queue, small enough to scan and look up cheaply;
- `b<span>` -> the batch record's bytes (the table's value): the ids to delete when it expires.
A batch's ids and its entries are written in one WriteBatch, and so is an expiry: after a
kill -9 the database holds whole batches only.

Recovery (`restore`) checks the index against the restored table instead of rebuilding it,
streaming both sides (a set of either side's keys held 750 MB at 3M batch records):
- every table key is looked up in the index, and merged in when missing (another worker
  consumed the partition meanwhile, an expiry whose table delete never happened, or a crash
  after the table write and before the index's), first position wins;
- the index's batches are counted: more than the table keys found means it holds a batch the
  table does not (expired by another owner, or an index from before the table was written
  first): the partition's index is rebuilt from the table.
The table is the source of truth in every case, so the result is what the in-memory index
would hold after its rebuild. A revoked partition's database is closed (its memory freed) and
kept on disk, to be checked again if the partition comes back.
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson
import rocksdict

from streams.dedupe import Sighting
from streams.faust.app import WorkerConfig
from streams.faust.dedupe_log import (
    EXPIRY_SLACK_MS,
    UNTIMED,
    BatchRecord,
    DedupeIndex,
    DedupeTable,
    MemoryDedupeIndex,
    Seen,
    keeps,
    key_span,
    load_record,
    sighting,
    table_keys,
)
from streams.ledger import Position

log = logging.getLogger("allotment.worker")

FORMAT = b"3"
_VERSION = b"v"
_POSITION = struct.Struct(">QI")
_SEEN = struct.Struct(">QIq")
_SPAN = struct.Struct(">QIQI")
_TIME = struct.Struct(">q")
_ID = b"e"
_BODY = b"b"
_RECORD = b"r"
_RECORD_END = b"s"
_NONE_HELD = 2**63 - 1


def _span_of(record: BatchRecord) -> bytes:
    return _SPAN.pack(*key_span(record.key)[1])


def _unpack(raw: bytes) -> Seen:
    offset, index, time_ms = _SEEN.unpack(raw)
    return (offset, index), time_ms


def _get_many(db: rocksdict.Rdict, keys: list[bytes]) -> list[bytes | None]:
    """One multi_get; rocksdict answers a list of keys with a list of values."""
    return cast(list[bytes | None], db.get(cast(Any, keys))) if keys else []


def _options(cache: rocksdict.Cache, write_buffer: int) -> rocksdict.Options:
    """Bounded memory: small write buffers per partition and one block cache for all of them.
    Bloom filters, because most lookups are for ids never seen (a miss). The filter and index
    blocks stay outside the block cache (about 2 bytes per id held): measured with them in
    the cache, a lookup went from about 2 µs to 30 µs once the index held a million ids."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(write_buffer)
    options.set_max_write_buffer_number(2)
    options.set_max_open_files(256)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(cache)
    options.set_block_based_table_factory(table)
    return options


class RocksDedupeIndex:
    """`DedupeIndex` in one RocksDB per usage partition; see the module docstring."""

    def __init__(
        self,
        path: Path,
        window_ms: int,
        *,
        block_cache: int = 32 << 20,
        write_buffer: int = 8 << 20,
        slack_ms: int = EXPIRY_SLACK_MS,
    ) -> None:
        self.path = path
        self.window_ms = window_ms
        self.slack_ms = slack_ms
        self._options = _options(rocksdict.Cache(block_cache), write_buffer)
        self._dbs: dict[int, rocksdict.Rdict] = {}
        self._pending: dict[int, dict[str, Seen]] = {}  # this batch's new ids
        self._oldest: dict[int, int] = {}  # record time of the oldest batch, once known
        # (_NONE_HELD when it holds none)
        self._floor: dict[int, bytes] = {}  # the last expired record key: seek from there
        self.rebuilds = 0  # partitions rebuilt by `restore`, for logs and tests

    def _partition_path(self, partition: int) -> Path:
        return self.path / f"usage-{partition}"

    def _db(self, partition: int) -> rocksdict.Rdict:
        db = self._dbs.get(partition)
        if db is None:
            self.path.mkdir(parents=True, exist_ok=True)
            path = str(self._partition_path(partition))
            db = self._dbs[partition] = rocksdict.Rdict(path, options=self._options)
            if db.get(_VERSION) is None and _empty(db):
                db.put(_VERSION, FORMAT)
        return db

    def classify(
        self, partition: int, event_id: str, position: Position, time_ms: int | None = None
    ) -> Sighting:
        pending = self._pending.get(partition)
        if pending is None:
            pending = self._pending[partition] = {}
        known = pending.get(event_id)
        if known is None:
            raw = self._db(partition).get(_ID + event_id.encode())
            if raw is None:
                pending[event_id] = (position, UNTIMED if time_ms is None else time_ms)
                return "new"
            known = _unpack(raw)
        kind = sighting(known, position, time_ms, self.window_ms)
        if kind == "new":
            pending[event_id] = (position, UNTIMED if time_ms is None else time_ms)
        return kind

    def add(self, record: BatchRecord) -> None:
        """Write the batch's ids and its entries at once (one WriteBatch)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        pack = _SEEN.pack
        for event_id, ((offset, index), time_ms) in record.sightings():
            batch.put(_ID + event_id.encode(), pack(offset, index, time_ms))
        self._put_record(batch, record)
        self._db(record.partition).write(batch)
        self._pending.pop(record.partition, None)
        oldest = self._oldest.get(record.partition)
        if oldest is not None and record.record_time_ms < oldest:
            self._oldest[record.partition] = record.record_time_ms

    @staticmethod
    def _put_record(batch: rocksdict.WriteBatch, record: BatchRecord) -> None:
        span = _span_of(record)
        batch.put(_RECORD + span, _TIME.pack(record.record_time_ms) + record.key.encode())
        batch.put(_BODY + span, orjson.dumps(record.to_dict()))

    def _records(self, partition: int, start: bytes = _RECORD) -> Iterator[tuple[bytes, bytes]]:
        it = self._db(partition).iter()
        it.seek(start)
        while it.valid():
            key = it.key()
            if key >= _RECORD_END:
                return
            yield key, it.value()
            it.next()

    def expire(self, partition: int, now_ms: int) -> list[str]:
        horizon = now_ms - self.window_ms - self.slack_ms
        oldest = self._oldest.get(partition)
        if oldest is not None and oldest >= horizon:
            return []  # the common case: no iterator, no read
        db = self._db(partition)
        expired: list[str] = []
        batch = rocksdict.WriteBatch(raw_mode=True)
        self._oldest[partition] = _NONE_HELD
        for key, value in self._records(partition, self._floor.get(partition, _RECORD)):
            (record_time,) = _TIME.unpack_from(value)
            if record_time >= horizon:
                self._oldest[partition] = record_time
                break
            body = _BODY + key[len(_RECORD) :]
            self._delete_ids(db, BatchRecord.from_dict(orjson.loads(db[body])), batch)
            batch.delete(key)
            batch.delete(body)
            self._floor[partition] = key
            expired.append(value[_TIME.size :].decode())
        if expired:
            db.write(batch)
        return expired

    @staticmethod
    def _delete_ids(db: rocksdict.Rdict, record: BatchRecord, batch: rocksdict.WriteBatch) -> None:
        """Delete the record's ids still held at the record's own positions (an id first seen
        in an older batch keeps that batch's position)."""
        keys = [_ID + event_id.encode() for event_id in record.ids]
        held = _get_many(db, keys)
        for key, raw, (offset, index) in zip(keys, held, record.positions, strict=True):
            if raw is not None and raw[: _POSITION.size] == _POSITION.pack(offset, index):
                batch.delete(key)

    def restore(self, table: DedupeTable, partitions: Collection[int]) -> None:
        self._pending.clear()
        self._oldest.clear()
        self._floor.clear()
        owned = set(partitions)
        for partition in [p for p in self._dbs if p not in owned]:
            self._close(partition)
        self._sweep()
        rebuilt: set[int] = set()
        held: dict[int, int] = {}
        for partition in owned:
            try:  # an older worker's layout, or a database that cannot be opened or read
                usable = self._db(partition).get(_VERSION) == FORMAT
                held[partition] = sum(1 for _ in self._records(partition)) if usable else 0
            except Exception as exc:
                _unreadable(partition, exc)
                usable = False
            if not usable:
                rebuilt.add(partition)
                self._drop(partition)
                self._db(partition)
                held[partition] = 0
        found = dict.fromkeys(owned, 0)
        merged = dict.fromkeys(owned, 0)
        tables = dict.fromkeys(owned, 0)
        broken: set[int] = set()
        for chunk in _chunks(table_keys(table, owned), _LOOKUPS):
            for partition in {p for _, p, _ in chunk} - broken:
                keys = [key for key, p, _ in chunk if p == partition]
                spans = [_RECORD + _SPAN.pack(*span) for _, p, span in chunk if p == partition]
                try:
                    values = _get_many(self._db(partition), spans)
                except Exception as exc:  # a corrupt database: rebuilt from the table below
                    _unreadable(partition, exc)
                    broken.add(partition)
                    continue
                missing = [key for key, value in zip(keys, values, strict=True) if value is None]
                for key in missing:
                    self._merge(load_record(table, key))
                tables[partition] += len(keys)
                found[partition] += len(keys) - len(missing)
                merged[partition] += len(missing)
        # the index holds a batch the table lacks, or could not be read
        ahead = {p for p in owned if found[p] < held[p]} | broken
        if ahead:
            for partition in ahead:
                self._drop(partition)
            for key, _, _ in table_keys(table, ahead):
                self._merge(load_record(table, key))
            rebuilt |= ahead
        self.rebuilds += len(rebuilt)
        for partition in sorted(owned):
            log.info(
                "dedupe index checked against the table",
                extra={"partition": partition, "batches": tables[partition],
                       "rebuilt": partition in rebuilt,
                       "merged": 0 if partition in rebuilt else merged[partition]},
            )  # fmt: skip

    def _merge(self, record: BatchRecord) -> None:
        """Add a restored record: an id keeps its held or its new sighting (`keeps`)."""
        db = self._db(record.partition)
        keys = [_ID + event_id.encode() for event_id in record.ids]
        held = _get_many(db, keys)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, raw, (_, seen) in zip(keys, held, record.sightings(), strict=True):
            if raw is None or keeps(_unpack(raw), seen, self.window_ms):
                batch.put(key, _SEEN.pack(*seen[0], seen[1]))
        self._put_record(batch, record)
        db.write(batch)

    def _close(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        for state in (self._pending, self._oldest, self._floor):
            state.pop(partition, None)

    def _drop(self, partition: int) -> None:
        """Close and delete the partition's database. Renamed first (one atomic step), then
        deleted: a kill -9 part way through the delete leaves a `.dropped` directory, never
        a half-deleted database (no MANIFEST) that no later open could read."""
        self._close(partition)
        path = self._partition_path(partition)
        dropped = path.with_name(path.name + _DROPPED)
        shutil.rmtree(dropped, ignore_errors=True)
        if path.exists():
            path.rename(dropped)
        shutil.rmtree(dropped, ignore_errors=True)

    def _sweep(self) -> None:
        """Finish the deletes a crash interrupted (`_drop`)."""
        if self.path.is_dir():
            for dropped in self.path.glob(f"usage-*{_DROPPED}"):
                shutil.rmtree(dropped, ignore_errors=True)

    def size(self) -> int:
        return sum(
            db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in self._dbs.values()
        )

    def close(self) -> None:
        for partition in list(self._dbs):
            self._close(partition)


_DROPPED = ".dropped"


def _unreadable(partition: int, exc: Exception) -> None:
    log.warning(
        "dedupe index cannot be opened or read; rebuilding it from the table",
        extra={"partition": partition, "error": repr(exc)},
    )


_LOOKUPS = 1024  # table keys looked up in the index at once (one multi_get)

T = TypeVar("T")


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _empty(db: rocksdict.Rdict) -> bool:
    it = db.iter()
    it.seek_to_first()
    return not it.valid()


def open_dedupe_index(config: WorkerConfig) -> DedupeIndex:
    """The index that goes with the worker's store: on disk beside the RocksDB tables, in a
    dict with the memory store (whose tables are rebuilt from changelogs anyway)."""
    window_ms = int(config.dedupe_window.total_seconds() * 1000)
    if config.store == "rocksdb":
        return RocksDedupeIndex(config.store_dir / f"{config.app_id}-dedupe-index", window_ms)
    return MemoryDedupeIndex(window_ms)


def restore_from_table(index: DedupeIndex, table: DedupeTable, partitions: Iterable[int]) -> None:
    """Make `index` agree with the dedupe table just restored, for the owned `partitions`."""
    index.restore(table, set(partitions))
