"""Request bodies are read in chunks against the limit: a gzip bomb or an endless chunked
body is refused (413) as soon as it passes it, without reading or inflating the rest."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Iterator

import pytest

from services.ingest import routes
from services.ingest.errors import BadPayload, BodyTooLarge

MB = 1024 * 1024


class _StreamedRequest:
    """What `read_body` uses of a Starlette request: headers and the body's chunks, counted."""

    def __init__(self, chunks: Iterator[bytes], headers: dict[str, str]) -> None:
        self.headers = headers
        self._chunks = chunks
        self.chunks_read = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.chunks_read += 1
            yield chunk

    async def body(self) -> bytes:
        """Starlette's whole-body read, for a reader that asks for it."""
        return b"".join([chunk async for chunk in self.stream()])


def gzip_bomb(zeros: int, chunk: int = 1 * MB) -> Iterator[bytes]:
    """`zeros` bytes of zeros, gzipped as they are made (never held whole here either)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(chunk)
    for _ in range(zeros // chunk):
        out = deflater.compress(block)
        if out:
            yield out
    yield deflater.flush()


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_gzip_bomb_is_refused_before_it_is_all_read():
    compressed = b"".join(gzip_bomb(100 * 1000 * 1000))  # 100 MB of zeros, ~100 KB
    pieces = list(_pieces(compressed, 8 * 1024))
    request = _StreamedRequest(iter(pieces), {"content-encoding": "gzip"})
    with pytest.raises(BodyTooLarge):
        await routes.read_body(request)  # type: ignore[arg-type]
    # 64 MiB of the 100 MB is reached about two thirds of the way through the compressed body.
    assert request.chunks_read < len(pieces)


async def test_a_chunked_body_without_length_is_refused_once_past_the_limit():
    endless = (bytes(MB) for _ in range(1000))  # 1,000 MB if it were all read
    request = _StreamedRequest(endless, {})
    with pytest.raises(BodyTooLarge):
        await routes.read_body(request)  # type: ignore[arg-type]
    assert request.chunks_read == routes.MAX_BODY_BYTES // MB + 1


async def test_gzip_bodies_still_read_whole_members_and_concatenated_ones():
    body = b'{"a": 1}\n' * 1000
    two_members = gzip.compress(body) + gzip.compress(body)
    request = _StreamedRequest(_pieces(two_members, 100), {"content-encoding": "gzip"})
    assert await routes.read_body(request) == body + body  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [gzip.compress(b"{}")[:-5], b"not gzip at all"])
async def test_a_broken_gzip_body_is_a_bad_payload(data: bytes):
    request = _StreamedRequest(iter([data]), {"content-encoding": "gzip"})
    with pytest.raises(BadPayload, match="does not decompress"):
        await routes.read_body(request)  # type: ignore[arg-type]
