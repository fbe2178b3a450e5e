"""A worker stopped with SIGTERM while a timer writes exits 0, with every write it made sent.

Faust stops the aiokafka producer before its buffer and cancels the app's timers only after
every service stopped; a timer's table write queued after the last flush met a closed
producer and ended the clean stop with 70 (`AllotmentApp.on_stop`, `AcknowledgingProducer`).
The timer here writes through the producer buffer exactly as a table write does (`send_soon`),
in one long run, and signals its own process once it wrote a few records.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pipeline_harness import read_all

from schemas.topics import POLICIES

ROOT = Path(__file__).resolve().parents[2]

TIMER_WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    import faust
    from streams.faust.app import WorkerConfig, build_app

    bootstrap, prefix, store, out = sys.argv[1:5]
    app = build_app(WorkerConfig(bootstrap, prefix, Path(store), store="memory"))
    topic = app.topic(out, key_serializer="raw", value_serializer="raw", internal=False)
    written = 0

    @app.timer(0.01)
    async def write() -> None:
        # One long run that writes as it goes (a forecast run over many budgets): it is still
        # writing while the worker stops, unless something stops it first.
        global written
        while True:
            topic.send_soon(key=b"k", value=str(written).encode())
            written += 1
            if written == 20:
                os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(0.002)

    faust.Worker(app, loglevel="warning", redirect_stdouts=False, quiet=True)\\
        .execute_from_commandline()
    """
)


async def test_a_sigterm_while_a_timer_writes_ends_the_worker_cleanly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    out = POLICIES.name(topic_prefix)
    run = subprocess.run(
        [sys.executable, "-c", TIMER_WORKER, kafka_bootstrap, topic_prefix, str(tmp_path), out],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    values = sorted(int(r.value) for r in await read_all(kafka_bootstrap, out))
    assert values[:20] == list(range(20)) and values == list(range(len(values)))
