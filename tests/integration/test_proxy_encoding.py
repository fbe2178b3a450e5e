"""The proxy answers in an encoding the client can read, whatever the client offered (review A,
finding 2).

httpx offers `br` and `zstd` when their decoders are installed on the client. The proxy used to
forward that offer; an upstream answering in br (as providers behind a CDN do) gave a 502 and
the usage the provider billed was never recorded.
"""

from __future__ import annotations

from pathlib import Path

import anthropic
import httpx
import openai
from fakes.provider import FakeProvider
from fakes.proxy_harness import read_usage, running_proxy, unique_tenant

MESSAGES = [{"role": "user", "content": "hello"}]
OFFERS_BR = {"accept-encoding": "gzip, deflate, br, zstd"}  # httpx with brotli and zstandard


async def test_a_client_offering_br_gets_a_decoded_answer_and_its_usage_is_recorded(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    async with FakeProvider(compress=True) as fake:
        async with httpx.AsyncClient() as http:  # the premise: asked for br, the fake sends br
            direct = await http.post(
                f"{fake.url}/v1/chat/completions", json={"model": "m"}, headers=OFFERS_BR
            )
        assert direct.headers["content-encoding"] == "br"
        async with running_proxy(kafka_bootstrap, topic_prefix, fake.url, tmp_path, tenant) as run:
            oai = openai.AsyncOpenAI(
                base_url=f"{run.url}/v1", api_key=run.secret, default_headers=OFFERS_BR
            )
            completion = await oai.chat.completions.create(
                model="chat-br",
                messages=MESSAGES,
                extra_headers={"x-fake-usage": '{"input":1200,"output":300}'},
            )
            assert completion.usage is not None and completion.usage.total_tokens == 1500
            ant = anthropic.AsyncAnthropic(
                base_url=run.url, api_key=run.secret, default_headers=OFFERS_BR
            )
            message = await ant.messages.create(
                model="claude-br",
                max_tokens=50,
                messages=MESSAGES,
                extra_headers={"x-fake-usage": '{"input":70,"output":7}'},
            )
            assert message.usage.output_tokens == 7
        upstream_offers = [r.headers.get("Accept-Encoding", "") for r in fake.received[1:]]
        assert len(upstream_offers) == 2 and not any("br" in o for o in upstream_offers)
    events = {e.request_model: e for e in await read_usage(kafka_bootstrap, topic_prefix, 2)}
    assert (events["chat-br"].total, events["chat-br"].usage_status) == (1500, "reported")
    assert (events["claude-br"].total, events["claude-br"].usage_status) == (77, "reported")
