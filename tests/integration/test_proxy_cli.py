"""`allotment proxy` as an operator starts it: configured from the environment and a keys file,
it serves, and on SIGTERM it stops cleanly with the usage it recorded sent or spooled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import anthropic
from fakes.net import free_port
from fakes.provider import FakeProvider
from fakes.proxy_harness import read_usage, unique_tenant

from services.proxy.keys import hash_key


async def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"allotment proxy exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("allotment proxy never listened")


async def test_allotment_proxy_serves_and_stops_cleanly(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    tenant = unique_tenant()
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: ops-key\n    key_sha256: {hash_key('sk-ops')}\n    tenant: {tenant}\n"
        "    team: platform\n"
    )
    port = free_port()
    async with FakeProvider() as fake:
        env = {
            **os.environ,
            "ALLOTMENT_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "ALLOTMENT_TOPIC_PREFIX": topic_prefix,
            "ALLOTMENT_PROXY_ANTHROPIC_UPSTREAM": fake.url,
            "ALLOTMENT_PROXY_ANTHROPIC_API_KEY": "sk-real-provider-key",
        }
        command = [
            str(Path(sys.executable).parent / "allotment"),
            "proxy",
            "--port",
            str(port),
            "--keys-file",
            str(keys),
            "--spool-dir",
            str(tmp_path / "spool"),
        ]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            await wait_port(port, proc)
            client = anthropic.AsyncAnthropic(
                base_url=f"http://127.0.0.1:{port}", api_key="sk-ops", max_retries=0
            )
            message = await client.messages.create(
                model="claude-cli",
                max_tokens=20,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-fake-usage": '{"input":5,"output":6}'},
            )
            assert message.usage.output_tokens == 6
            # the provider got the real key, never the virtual one
            assert fake.last().headers["x-api-key"] == "sk-real-provider-key"
        finally:
            proc.send_signal(signal.SIGTERM)
            output = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, output[0].decode()
    events = await read_usage(kafka_bootstrap, topic_prefix, 1)
    assert [(e.request_model, e.tenant, e.team, e.virtual_key, e.total) for e in events] == [
        ("claude-cli", tenant, "platform", "ops-key", 11)
    ]
