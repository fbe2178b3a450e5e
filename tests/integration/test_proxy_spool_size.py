"""A spool backlog of large events drains; an event Kafka can never take is set aside, not
resent forever in front of the others (review A, finding 1).

Before, the sender packed the oldest 5,000 spooled events 500 to a message: 500 events with 64
long tags made a 6.8 MB message the usage topic refused every time, so nothing behind it, any
tenant's, reached Kafka again.
"""

from __future__ import annotations

from pathlib import Path

from fakes.proxy_harness import read_usage, unique_tenant, until
from spool_support import running_emitter, spool_row

from services.proxy.spool import Spool

LONG_TAGS = tuple(f"{j:02d}" + "t" * 198 for j in range(64))  # the most parse_tags allows


async def test_a_backlog_of_large_events_drains_past_one_that_can_never_fit(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant, other = unique_tenant(), unique_tenant()
    spool = Spool(tmp_path / "spool")
    # First in line: an event over a megabyte (no request the proxy serves builds one; a spool
    # written under a larger limit could hold one).
    huge = spool_row("huge", tenant, (), "/v1/chat/completions" + "x" * 1_100_000)
    spool.append([huge])
    backlog = [spool_row(f"big-{i}", tenant, LONG_TAGS, "/v1/chat/completions") for i in range(600)]
    assert len(backlog[0][1]) > 13_000
    spool.append(backlog)
    spool.append([spool_row("small", other, (), "/v1/chat/completions")])

    async with running_emitter(spool, kafka_bootstrap, topic_prefix) as emitter:
        await until(lambda: len(spool) == 0, timeout=60, what="the spool to drain")
    try:
        assert emitter.sent == 601
        assert emitter.set_aside == 1 and spool.set_aside_count() == 1
        events = await read_usage(kafka_bootstrap, topic_prefix, 601)
        assert sorted(e.source_request_id or "" for e in events) == sorted(
            [f"big-{i}" for i in range(600)] + ["small"]
        )
        assert {e.tenant for e in events} == {tenant, other}
    finally:
        spool.close()
