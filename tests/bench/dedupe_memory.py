"""Memory and cost of the dedupe index: the dict vs RocksDB (`python tests/bench/dedupe_memory.py`).

Each index runs in its own child process (so one's heap never counts for the other) and is fed
N event ids the way resolve feeds it: batches of 500 new ids from one usage partition, each id
classified, then the batch record added and expiry checked. It reports:
- the process's RSS growth (and peak) after holding N ids, and per id;
- classify + add + expire per event (µs), and a lookup of an id already held (µs);
- the time to make the index agree with its table again after a restart (`restore`: the dict
  decodes every record again; RocksDB reopens and compares batch keys);
- for RocksDB, the size of its files on disk.
No broker needed. The last line is one JSON object with every figure and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streams.faust.dedupe_log import BatchRecord  # noqa: E402

BATCH = 500
WINDOW_MS = 7 * 86_400_000


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _batch_ids(offset: int, count: int) -> list[str]:
    """The same ids for the same batch every time (the restore rebuilds the table from them)."""
    rng = random.Random(offset)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def _record(offset: int, ids: list[str]) -> BatchRecord:
    return BatchRecord(
        0, offset, offset, 1_000 + offset, ids, [(offset, i) for i in range(len(ids))]
    )


def run_variant(variant: str, ids: int, workdir: Path) -> dict[str, float]:
    from streams.faust.dedupe_index import RocksDedupeIndex
    from streams.faust.dedupe_log import DedupeIndex, MemoryDedupeIndex

    def open_index() -> DedupeIndex:
        if variant == "dict":
            return MemoryDedupeIndex(WINDOW_MS)
        return RocksDedupeIndex(workdir / "index", WINDOW_MS)

    index = open_index()
    rss_before = _rss_mb()
    spent = 0.0
    sample: list[str] = []
    for first in range(0, ids, BATCH):
        offset = first // BATCH
        batch = _batch_ids(offset, min(BATCH, ids - first))
        sample.append(batch[0])
        started = time.perf_counter()
        kinds = [
            index.classify(0, event_id, (offset, i), 1_000 + offset)
            for i, event_id in enumerate(batch)
        ]
        record = _record(offset, batch)
        index.add(record)
        index.expire(0, record.record_time_ms)
        spent += time.perf_counter() - started
        if kinds.count("new") != len(batch):
            raise SystemExit(f"{variant}: fresh ids classified as seen")
    rss_held = _rss_mb()
    started = time.perf_counter()
    for n, event_id in enumerate(sample):
        if index.classify(0, event_id, (10**9, n), 1_000 + ids) != "duplicate":
            raise SystemExit(f"{variant}: a held id was not found")
    lookup_us = (time.perf_counter() - started) / len(sample) * 1e6
    figures = {
        "rss_growth_mb": rss_held - rss_before,
        "bytes_per_id": (rss_held - rss_before) * 2**20 / ids,
        "us_per_event": spent / ids * 1e6,
        "held_lookup_us": lookup_us,
    }
    index.close()
    del index
    # The table's values, as the worker's table store would hand them over (not timed).
    table = {}
    for first in range(0, ids, BATCH):
        offset = first // BATCH
        record = _record(offset, _batch_ids(offset, min(BATCH, ids - first)))
        table[record.key.encode()] = orjson.dumps(record.to_dict())
    if variant == "rocksdb":
        figures["disk_mb"] = _dir_mb(workdir / "index")
    started = time.perf_counter()
    rebuilt = open_index()
    rebuilt.restore(table, [0])
    figures["restore_s"] = time.perf_counter() - started
    if getattr(rebuilt, "rebuilds", 0):
        raise SystemExit("rocksdb: a restart rebuilt the index instead of keeping it")
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rebuilt.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=2_000_000)
    parser.add_argument("--variant", choices=("dict", "rocksdb"))  # the child's
    parser.add_argument("--variants", default="dict,rocksdb", help="which to run, in order")
    args = parser.parse_args()
    if args.variant:  # the child: one index, figures on stdout
        with tempfile.TemporaryDirectory(prefix="dedupe-bench-") as tmp:
            print(orjson.dumps(run_variant(args.variant, args.ids, Path(tmp))).decode())
        return
    load_before = os.getloadavg()
    results = {}
    for variant in args.variants.split(","):
        child = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--ids", str(args.ids)],
            capture_output=True, check=True, text=True, cwd=ROOT,
        )  # fmt: skip
        results[variant] = orjson.loads(child.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(
            f"{variant:8} {args.ids:,} ids: RSS +{r['rss_growth_mb']:,.0f} MB "
            f"({r['bytes_per_id']:,.0f} B/id, peak {r['peak_rss_mb']:,.0f} MB), "
            f"classify+add+expire {r['us_per_event']:.2f} µs/event, "
            f"held lookup {r['held_lookup_us']:.2f} µs, restore {r['restore_s']:.2f} s"
            + (f", disk {r['disk_mb']:,.0f} MB" if "disk_mb" in r else "")
        )
    print(f"machine: {os.cpu_count()} cores, load before {load_before}, after {os.getloadavg()}")
    line = {"ids": args.ids, "cores": os.cpu_count()}
    for variant, r in results.items():
        for name, value in r.items():
            line[f"{variant}_{name}"] = round(value, 3)
    line["load_avg_1m_before"] = round(load_before[0], 2)
    line["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(line).decode())


if __name__ == "__main__":
    main()
