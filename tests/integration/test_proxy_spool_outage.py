"""No usage is lost while Kafka is unreachable: it waits in the durable spool and is sent when
the broker is back, also across a proxy restart.

The shared broker is never stopped. The outage is the proxy's producer pointed at a port where
no broker listens; "the broker returns" is the same producer pointed at the real one.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anthropic
import openai
from fakes.provider import FakeProvider
from fakes.proxy_harness import read_usage, running_proxy, unique_tenant, until

MESSAGES = [{"role": "user", "content": "spool me"}]


def dead_port() -> str:
    """An address where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def send_requests(url: str, secret: str, tag: str, count: int) -> None:
    oai = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=url, api_key=secret, max_retries=0)
    for i in range(count):
        usage = {"x-fake-usage": f'{{"input":{100 + i},"output":{i + 1}}}'}
        if i % 3 == 0:
            await ant.messages.create(
                model=f"{tag}-{i}", max_tokens=50, messages=MESSAGES, extra_headers=usage
            )
        elif i % 3 == 1:
            stream = await oai.chat.completions.create(
                model=f"{tag}-{i}", messages=MESSAGES, stream=True, extra_headers=usage
            )
            async for _ in stream:
                pass
        else:
            await oai.chat.completions.create(
                model=f"{tag}-{i}", messages=MESSAGES, extra_headers=usage
            )


async def test_usage_survives_a_broker_outage_and_a_restart(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    spool_dir = tmp_path / "spool"
    async with FakeProvider() as fake:
        # 1. Broker unreachable while the proxy runs; it comes back; the spool drains.
        async with running_proxy(
            dead_port(), topic_prefix, fake.url, spool_dir, tenant, wait_caught_up=False
        ) as run:
            await send_requests(run.url, run.secret, "outage", 12)
            emitter = run.proxy.emitter
            assert emitter is not None
            await until(lambda: len(emitter.spool) == 12, what="12 events spooled")
            assert emitter.sent == 0
            emitter.sink.bootstrap = kafka_bootstrap  # the broker is back
            await until(lambda: len(emitter.spool) == 0, 60, "the spool to drain")

        # 2. Broker unreachable, and the proxy stops before it returns.
        async with running_proxy(
            dead_port(),
            topic_prefix,
            fake.url,
            spool_dir,
            tenant,
            wait_caught_up=False,
            drain_timeout_s=0.5,
        ) as run:
            await send_requests(run.url, run.secret, "restart", 9)
        assert run.proxy.emitter is not None and run.proxy.emitter.sent == 0

        # 3. A new proxy on the same spool, with the broker back, sends what was left.
        async with running_proxy(kafka_bootstrap, topic_prefix, fake.url, spool_dir, tenant) as run:
            emitter = run.proxy.emitter
            assert emitter is not None
            await until(lambda: emitter.sent >= 9, 60, "the left-over events to be sent")

    events = await read_usage(kafka_bootstrap, topic_prefix, 21)
    by_model = {e.request_model: e for e in events}
    assert len(events) == 21, "each event exactly once"
    assert len({e.event_id for e in events}) == 21
    for tag, count in (("outage", 12), ("restart", 9)):
        for i in range(count):
            event = by_model[f"{tag}-{i}"]
            assert (event.input_uncached, event.output) == (100 + i, i + 1)
            assert event.tenant == tenant
