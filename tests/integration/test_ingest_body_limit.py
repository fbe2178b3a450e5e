"""Over HTTP: a small gzip that inflates past the body limit is answered 413."""

from __future__ import annotations

import zlib

import httpx
from ingest_support import MemorySink, key_ring, serve

from services.ingest.keys import hash_key

KEY = "body-limit-key"


def _bomb(zeros: int) -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [deflater.compress(block) for _ in range(zeros // len(block))]
    return b"".join(parts) + deflater.flush()


def test_a_gzip_bomb_is_answered_413():
    keys = key_ring({"id": "k", "tenant": "limits", "key_sha256": hash_key(KEY)})
    bomb = _bomb(100 * 1024 * 1024)  # 100 MiB of zeros in about 100 KB
    assert len(bomb) < 1024 * 1024
    headers = {
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        "content-encoding": "gzip",
    }
    with serve(keys, MemorySink()) as base, httpx.Client(base_url=base, timeout=60) as http:
        for route in ("/v1/usage", "/v1/traces"):
            response = http.post(route, content=bomb, headers=headers)
            assert response.status_code == 413, (route, response.text[:200])
            assert "larger than" in response.json()["error"]
