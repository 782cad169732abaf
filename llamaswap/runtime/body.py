"""Body: a client's request body, read under the size limit and the read timeout.

Invariants:
- A body whose declared Content-Length is over its limit is refused (413) before one byte of
  it is read; a body without a declared length (chunked) is refused as soon as the bytes read
  cross the limit. Whatever was read is dropped with the exception.
- Every read waits at most `timeout` seconds for the next bytes (408 after that).
- Only `read_all` holds a body whole (a JSON or urlencoded body the proxy must parse, or
  rewrite); `stream` hands chunks over as they arrive, so an upload never sits in memory.
  For multipart bodies, `read_multipart_head` reads only up to the end of the `model` field.
- `Body` is what routing read of a body; `upstream_body` sends that, then streams the rest
  (local models through dispatch.py, peers through peers.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from llamaswap.runtime.filters import MultipartModelScanner
from llamaswap.runtime.keys import LIMITS, LIVE

READ_CHUNK = 1 << 16


class BodyError(Exception):
    """The body cannot be taken: `status` (413, 408 or 400) and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamBody:
    """A body forwarded as it arrives: its chunks, and its length when it is known."""

    chunks: AsyncIterator[bytes]
    length: int | None


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int | None
    timeout: float | None


def _too_large(limit: int, key: str) -> BodyError:
    return BodyError(413, f"request body is larger than the limit of {limit} bytes (server.{key})")


def check_declared(request: web.Request, limits: BodyLimits, key: str) -> None:
    """413 now if the declared Content-Length is over the limit."""
    length = request.content_length
    if limits.max_bytes is not None and length is not None and length > limits.max_bytes:
        raise _too_large(limits.max_bytes, key)


async def _read_some(request: web.Request, limits: BodyLimits) -> bytes:
    content = request.content
    data = content.read_nowait()  # bytes already here (a small body comes with its head): no timer
    if data or content.at_eof():
        return data
    try:
        async with asyncio.timeout(limits.timeout):
            return await request.content.readany()
    except TimeoutError:
        raise BodyError(
            408, f"request body timeout: no bytes for {limits.timeout:g}s (server.bodyTimeout)"
        ) from None


async def stream(
    request: web.Request, limits: BodyLimits, key: str, prefix: bytes = b"", already: int = 0
) -> AsyncIterator[bytes]:
    """The body as it arrives (after `prefix`, standing for `already` bytes read)."""
    if prefix:
        yield prefix
    seen = already
    while True:
        chunk = await _read_some(request, limits)
        if not chunk:
            return
        seen += len(chunk)
        if limits.max_bytes is not None and seen > limits.max_bytes:
            raise _too_large(limits.max_bytes, key)
        yield chunk


async def read_all(request: web.Request, limits: BodyLimits, key: str) -> bytes:
    """The whole body (for a body that must be parsed)."""
    content = request.content
    data = content.read_nowait()
    if limits.max_bytes is not None and len(data) > limits.max_bytes:
        raise _too_large(limits.max_bytes, key)
    if content.at_eof():
        return data  # the whole body came with its head: no generator, no timer
    buf = bytearray(data)
    async for chunk in stream(request, limits, key, already=len(data)):
        buf += chunk
    return bytes(buf)


async def read_multipart_head(
    request: web.Request, limits: BodyLimits, key: str, boundary: bytes
) -> tuple[bytes, str | None, int | None, bool]:
    """Read a multipart body up to the end of its `model` field.

    The bytes read are the buffer they were gathered in (a bytearray, used as bytes: sliced,
    searched, written), not a copy: with the model field after a large file part they may be
    up to `server.maxMultipartBytes` long, and a copy doubled the peak.

    Returns (bytes read, the model or None, where the model field's part ends in those bytes
    (None if not found), whether the body ended)."""
    buf = bytearray()
    scanner = MultipartModelScanner(boundary)
    while True:
        found = scanner.feed(buf)
        if found is not None:
            return cast(bytes, buf), found[0], found[1], False
        chunk = await _read_some(request, limits)
        if not chunk:
            return cast(bytes, buf), None, None, True
        buf += chunk
        if limits.max_bytes is not None and len(buf) > limits.max_bytes:
            raise _too_large(limits.max_bytes, key)


@dataclass(slots=True)
class Body:
    """What was read of a request body before routing it.

    Parsed bodies (JSON, urlencoded) are read whole (`raw`). Others are not: a multipart
    body is read up to the end of its `model` field (`head`, the field's part ending at
    `model_end`), any other body not at all; `rest` says that more is still to be streamed."""

    raw: bytes | None = None
    json: dict | None = None
    model: str | None = None
    head: bytes = b""
    model_end: int | None = None
    rest: bool = False


def body_limits(request: web.Request) -> tuple[BodyLimits, str]:
    limits = request.app[LIMITS].of(request.app[LIVE].plan)
    size, key = limits.body_limit(request.content_type)
    return BodyLimits(size, limits.body_timeout), key


def upstream_body(request: web.Request, body: Body, head: bytes) -> bytes | StreamBody:
    """The body to send upstream: `head` (what was read, maybe rewritten), then the rest as
    it arrives."""
    if not body.rest:
        return head
    limits, key = body_limits(request)
    declared = request.content_length
    length = None if declared is None else declared - len(body.head) + len(head)
    return StreamBody(stream(request, limits, key, prefix=head, already=len(body.head)), length)
