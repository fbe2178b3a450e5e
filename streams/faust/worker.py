"""The worker's composition root: config in, a running Faust worker out.

Everything is built here, when the command runs: metrics registry and server, the Faust app,
its topics, tables and agents. Logs are one JSON object per line on stderr, so a log shipper
needs no parser of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.errors import AllotmentError
from streams.faust.app import WorkerConfig, build_app

LOCK_FILE = "worker.lock"
STORE_DIR_LOCKED = 75
"""Exit status when another worker holds the store directory (EX_TEMPFAIL). Not `REREAD` (70):
a supervisor restarting this worker on the same directory would only be refused again."""


class StoreDirLocked(AllotmentError):
    """Another running worker uses this store directory (its tables and dedupe index)."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        super().__init__(
            f"store_dir: {store_dir} is in use by another running worker; give each worker "
            "its own directory (--store-dir or ALLOTMENT_STORE_DIR)"
        )


@contextlib.contextmanager
def store_dir_lock(store_dir: Path) -> Iterator[None]:
    """Hold the store directory for this process, or raise `StoreDirLocked` at once.

    Two workers on one directory would share RocksDB stores and the dedupe index; RocksDB
    refuses the second opener, but only when it opens a partition (mid-stream: a restart loop,
    or in a recovery callback). A `flock` on one file is taken up front instead, and the kernel
    drops it when the process ends, kill -9 included: no stale lock after a crash.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreDirLocked(store_dir) from None
        yield
    finally:
        os.close(fd)


GC_THRESHOLDS = (50_000, 20, 10)
"""Allocations between young-generation collections (Python's default is 700), then as usual.

The stages allocate a few short-lived containers per usage event (decoded events, charge
lines) while the in-memory tables keep growing (and, with the memory store, the dedupe dict).
Measured when the dedupe index was still a dict in every store: with the default, the
collector ran about 4,000 times in a 400,000-event backlog and walked the whole long-lived
heap 31 times, about 2.2 of 8.9 seconds (tests/bench/pipeline.py); with these, 0.2 seconds.
"""

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def logging_config(level: str) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLines}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": level.upper()},
        },
    }


def tune_gc() -> None:
    """Collect once, move what start-up built (modules, schemas, the wired app) out of the
    collector's sight for good (`gc.freeze`), and collect the young generation less often.

    Reference counting still frees everything at once; only cycles wait longer for the
    collector, a bounded amount of memory (`GC_THRESHOLDS`).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(config: WorkerConfig) -> None:
    """Build and run one worker until it is stopped (SIGTERM/SIGINT) or killed; refuse to
    start (`StoreDirLocked`) while another worker holds the store directory."""
    config.validate()
    with store_dir_lock(config.store_dir):
        _run(config)


def _run(config: WorkerConfig) -> None:
    import faust

    from streams.faust.agents import Pipeline
    from streams.faust.forecasting import attach_forecaster
    from streams.faust.metrics import WorkerMetrics

    metrics = WorkerMetrics.build()
    app = build_app(config)
    pipeline = Pipeline(app, config, metrics)
    attach_forecaster(pipeline)  # the forecast agent (streams/faust/forecasting.py)
    # The allocation book is complete before any agent runs (its own loop: Faust's is not
    # running yet, and must not be created or closed here).
    catch_up = asyncio.new_event_loop()
    try:
        catch_up.run_until_complete(pipeline.allocations.catch_up())
    finally:
        catch_up.close()
    log = logging.getLogger("allotment.worker")

    port = metrics.serve(config.web_port)

    async def announce() -> None:
        log.info(
            "worker starting",
            extra={
                "app_id": config.app_id,
                "bootstrap": config.bootstrap,
                "topic_prefix": config.topic_prefix,
                "store": config.store,
                "store_dir": str(config.store_dir),
                "metrics_port": port,
            },
        )

    app.task(announce)
    tune_gc()
    worker = faust.Worker(
        pipeline.app,
        loglevel=config.log_level,
        logging_config=logging_config(config.log_level),
        redirect_stdouts=False,
        quiet=True,
    )
    try:
        worker.execute_from_commandline()  # ends with SystemExit
    finally:
        pipeline.dedupe.close()  # the loop is done: no agent can use the index any more
