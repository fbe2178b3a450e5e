"""A worker killed (SIGKILL) while receivers hold its requests, then restarted.

What is claimed, and tested here exactly: the alert is delivered at least once; the restarted
worker sends each unfinished delivery once more with the same identity. So the Standard Webhooks
receiver processes it once (same `webhook-id`), PagerDuty keeps one incident (same `dedup_key`),
and Slack, which has no idempotency key, shows the same message twice (same alert id). The
`alert-deliveries` topic holds one outcome per alert: the killed worker had none to publish.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from fakes import alert_events as ev
from fakes.alerts_harness import (
    SECRET,
    outbox,
    outcomes,
    produce,
    subprocess_env,
    until,
    write_config,
)
from fakes.receivers import FakeReceivers

from schemas.topics import BUDGETS, THRESHOLDS

REPO = Path(__file__).resolve().parents[2]


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "alerts"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_worker_killed_mid_delivery_then_restarted(
    kafka_bootstrap: str, topic_prefix: str, database_url: str, tmp_path: Path
) -> None:
    tenant = f"acme-{uuid.uuid4().hex[:6]}"
    leaf = f"{tenant}-copilot"
    log = tmp_path / "worker.log"
    with FakeReceivers(SECRET) as rx:
        path = write_config(
            tmp_path / "alerts.yaml",
            tenant,
            rx.url,
            channels=("slack", "pd", "hook"),
            lease_seconds=3.0,
            request_timeout_seconds=2.0,
        )
        env = subprocess_env(kafka_bootstrap, database_url, topic_prefix, path)
        rx.hold("/slack", "/pagerduty", "/webhook")
        await produce(
            kafka_bootstrap,
            topic_prefix,
            [(BUDGETS, ev.budget(tenant, leaf)), (THRESHOLDS, ev.crossed(tenant, leaf, 100))],
        )
        first = start_worker(env, log)
        second: subprocess.Popen[bytes] | None = None
        try:
            held = {"/slack", "/pagerduty", "/webhook"}
            arrived = await until(lambda: {r.path for r in rx.requests} == held, 60)
            assert arrived, log.read_text()
            first.kill()  # SIGKILL: no chance to record anything
            first.wait(10)
            assert {s for _, s, _ in outbox(database_url, topic_prefix)} == {"sending"}
            rx.release()  # the held requests are answered, to a dead worker
            second = start_worker(env, log)

            def delivered() -> bool:
                return {s for _, s, _ in outbox(database_url, topic_prefix)} == {"delivered"}

            assert await until(delivered, 60), log.read_text()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(20)
        assert [a for _, _, a in outbox(database_url, topic_prefix)] == [2, 2, 2]

        hooks = rx.received("/webhook")
        assert len(hooks) == 2 and all(h.problem is None for h in hooks)
        assert len({h.headers["webhook-id"] for h in hooks}) == 1
        assert len(rx.webhooks_processed) == 1  # the receiver's dedupe makes it once

        pages = [r.json() for r in rx.received("/pagerduty")]
        assert len(pages) == 2 and {p["dedup_key"] for p in pages} == {f"{leaf}:2026-10"}
        assert len(rx.incidents) == 1 and rx.incidents[f"{leaf}:2026-10"].triggers == 2

        slack = [r.json() for r in rx.received("/slack")]
        assert len(slack) == 2 and slack[0] == slack[1]  # at least once: a visible repeat

    # The killed worker never learned an outcome, so it published none: one per alert, from
    # the second worker, each on its second attempt.
    events = await outcomes(kafka_bootstrap, topic_prefix)
    assert sorted((e.channel, type(e).__name__, e.attempts) for e in events) == [
        ("hook", "AlertDelivered", 2),
        ("pd", "AlertDelivered", 2),
        ("slack", "AlertDelivered", 2),
    ]
