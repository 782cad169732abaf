"""Upstream: a lean, pooled HTTP/1.1 client for the proxy's upstream leg.

Why not aiohttp's ClientSession: it costs about half of the proxy's CPU per request (see
bench/README.md). This client does only what a reverse proxy needs — send one request on a
kept-alive connection, hand the response head back as soon as it is parsed, then the body
as it arrives — and leaves HTTP parsing to httptools (llhttp, the parser Node.js uses).

Invariants:
- One request at a time per connection; a connection returns to its pool only after its
  response was read to the end and both sides allow keep-alive. Anything else closes it.
- Body chunks are handed over as they arrive: never re-buffered into bigger pieces.
- Reading pauses when the consumer falls behind (bounded memory per response).
- A request sent on a reused connection that dies before any response byte is retried once
  on a new connection (the server closed an idle keep-alive connection under our feet).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import AsyncIterator, Iterable

import httptools
from multidict import CIMultiDict

HIGH_WATER = 1 << 20  # pause reading past this many unconsumed body bytes
MAX_IDLE = 32  # idle connections kept per upstream


class UpstreamConnectError(ConnectionError):
    """The upstream could not be reached (nothing was sent)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection or sent a malformed response."""


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status_text = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self.wakeup: asyncio.Future | None = None
        self.got_bytes = False
        self.paused = False
        self.keep_alive = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamClosed("upstream switched protocols; not supported here"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"malformed response from upstream: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        if not self.complete:
            if self.error is None and self._ends_with_close():
                # A response with neither a length nor chunking ends with the connection.
                self.complete = True
                self._wake()
            else:
                self._fail(UpstreamClosed(
                    "upstream closed the connection" + (f": {exc}" if exc else "")))

    def _ends_with_close(self) -> bool:
        if self.head is None or not self.head.done() or self.head.cancelled() or self.head.exception():
            return False
        for name, value in self.headers:
            low = name.lower()
            if low == b"content-length":
                return False
            if low == b"transfer-encoding" and b"chunked" in value.lower():
                return False
        return True

    # -- httptools callbacks ------------------------------------------------------------
    def on_status(self, status: bytes) -> None:
        self.status_text += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        # Only meaningful now (llhttp decides once the message is complete).
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- helpers --------------------------------------------------------------------------
    def _wake(self) -> None:
        w = self.wakeup
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        self._wake()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class UpstreamResponse:
    """A response whose head has arrived; the body follows through `read`/`iter_chunks`."""

    def __init__(self, conn: _Conn, method: str) -> None:
        self._conn = conn
        parser = conn.parser
        self.status: int = parser.get_status_code()
        self.reason: str = conn.status_text.decode("latin-1", "replace")
        self.headers: CIMultiDict = CIMultiDict(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in conn.headers)
        self._done = False
        self._bodyless = method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive."""
        conn = self._conn
        if self._bodyless:
            self._finish()
            return
        loop = asyncio.get_running_loop()
        try:
            while True:
                while conn.chunks:
                    chunk = conn.chunks.popleft()
                    conn.buffered -= len(chunk)
                    if conn.paused and conn.buffered < HIGH_WATER // 4 and conn.transport is not None:
                        conn.paused = False
                        conn.transport.resume_reading()
                    yield chunk
                if conn.complete:
                    break
                if conn.error is not None:
                    raise conn.error
                conn.wakeup = loop.create_future()
                await conn.wakeup
                conn.wakeup = None
        except BaseException:
            self._abort()
            raise
        self._finish()

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        # A bodyless response the parser did not see end (HEAD: llhttp cannot know it has no
        # body) leaves the connection in an unknown state: never reuse it.
        conn.pool._release(conn, reuse=conn.complete and conn.keep_alive and conn.error is None)

    def _abort(self) -> None:
        if not self._done:
            self._done = True
            self._conn.pool._release(self._conn, reuse=False)

    def close(self) -> None:
        """Give the connection up (closing it unless the body was read to the end)."""
        if not self._done:
            self._abort()


class UpstreamPool:
    """Kept-alive connections to one upstream (host, port)."""

    def __init__(self, host: str, port: int, connect_timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._host_header = f"{host}:{port}".encode("latin-1") if ":" not in host else f"[{host}]:{port}".encode()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}") from exc
        self._all.add(conn)
        return conn

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _release(self, conn: _Conn, reuse: bool) -> None:
        if reuse and not conn.closed and len(self._idle) < MAX_IDLE and conn.transport is not None \
                and not conn.transport.is_closing():
            conn._reset()
            self._idle.append(conn)
        elif conn.transport is not None and not conn.transport.is_closing():
            conn.closed = True
            conn.transport.close()

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | None) -> UpstreamResponse:
        """Send a request; return once the response head has arrived."""
        head = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
        head.append(b"Host: " + self._host_header + b"\r\n")
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if body is not None and (body or method not in ("GET", "HEAD", "DELETE", "OPTIONS")):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        payload = b"".join(head) + (body or b"")
        for attempt in (0, 1):
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed and candidate.transport is not None and not candidate.transport.is_closing():
                    conn = candidate
                    break
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            conn.used += 1
            loop = asyncio.get_running_loop()
            conn.head = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                await conn.head
            except UpstreamClosed:
                if reused and attempt == 0 and not conn.got_bytes:
                    continue  # a stale keep-alive connection: try once more on a new one
                raise
            except BaseException:
                self._release(conn, reuse=False)
                raise
            return UpstreamResponse(conn, method)
        raise UpstreamClosed("upstream closed the connection")  # pragma: no cover

    def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()


class UpstreamClient:
    """One pool per upstream base URL."""

    def __init__(self, connect_timeout: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self._pools: dict[tuple[str, int], UpstreamPool] = {}

    def pool(self, host: str, port: int) -> UpstreamPool:
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = UpstreamPool(host, port, self.connect_timeout)
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
