"""Upstream: a lean, pooled HTTP/1.1 client for the proxy's upstream leg.

Why not aiohttp's ClientSession: it costs about half of the proxy's CPU per request (see
bench/README.md). This client does only what a reverse proxy needs — send one request on a
kept-alive connection, hand the response head back as soon as it is parsed, then the body
as it arrives — and leaves HTTP parsing to httptools (llhttp, the parser Node.js uses).

Invariants:
- One request at a time per connection; a connection returns to its pool only after its
  response was read to the end and both sides allow keep-alive. Anything else closes it.
- Body chunks are handed over as they arrive: never re-buffered into bigger pieces.
- Reading pauses when the consumer falls behind (bounded memory per response), and a
  response head longer than MAX_HEAD fails the request (an upstream that never ends its
  head costs 1 MiB, not all memory).
- A request sent on a reused connection that dies before any response byte is retried once
  on a new connection (the server closed an idle keep-alive connection under our feet).
  A streamed request body cannot be replayed, so it always goes on a new connection.
- Every wait is bounded when the caller says so: connect, the response head (counted from
  the end of the request), the gap between two body chunks (`UpstreamTimeout`); idle pooled
  connections older than `idle_conn` are closed instead of reused.
- A streamed request body is written with the transport's flow control (never more than
  its write buffer ahead of the upstream), and sending stops as soon as the upstream answers.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import string
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from urllib.parse import quote

import httptools
from multidict import CIMultiDict

HIGH_WATER = 1 << 20  # pause reading past this many unconsumed body bytes
MAX_HEAD = 1 << 20  # a response head (status line and headers) may not be longer than this
MAX_IDLE = 32  # idle connections kept per upstream


class UpstreamConnectError(ConnectionError):
    """The upstream could not be reached (nothing was sent)."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection or sent a malformed response."""


class UpstreamTimeout(Exception):
    """A bounded wait on the upstream ran out: `phase` is "connect", "header" or "idle"."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


def request_target(target: str) -> bytes:
    """The request target as bytes: as given when ASCII (percent-encoding kept exactly),
    else with only the non-ASCII characters percent-encoded."""
    if not target.isascii():
        target = quote(target, safe=string.punctuation)
    return target.encode("ascii")


def set_keepalive(sock: socket.socket, idle: float) -> None:
    """TCP keep-alive probes after `idle` seconds of silence (Go's Dialer.KeepAlive)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle)))
    except OSError:
        pass


class _PoolDefault:
    """The type of POOL_DEFAULT: "use the pool's connect timeout"."""


POOL_DEFAULT = _PoolDefault()


class _Conn(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        self.idle_since = 0.0
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        self.no_reuse = False
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
        self.head_bytes = 0  # bytes received while no final (non-1xx) head is complete
        self.head_done = False
        self.interim = False  # parsing a 1xx interim response

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
        if not self.head_done:
            # llhttp keeps a header it has not seen the end of: an upstream that never ends
            # its head would otherwise grow this process without bound.
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD:
                self._fail(UpstreamClosed(f"upstream response head longer than {MAX_HEAD >> 10} KiB"))

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained
            self.drained = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.pool._forget(self)
        if not self.complete:
            if self.error is None and self._ends_with_close():
                # A response with neither a length nor chunking ends with the connection.
                self.complete = True
                self._wake()
            else:
                self._fail(UpstreamClosed("upstream closed the connection" + (f": {exc}" if exc else "")))

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
        if self.parser.get_status_code() < 200:
            # An interim response (100 Continue, 103 Early Hints; 101 raised Upgrade): not
            # the answer. llhttp reads the final response after it on the same connection.
            self.interim = True
            self.status_text = b""
            self.headers.clear()
            return
        self.head_done = True
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
        if self.interim:
            self.interim = False
            return
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


def _expire(waiter: asyncio.Future, message: str, phase: str) -> None:
    """A bounded wait ran out: fail its future with UpstreamTimeout."""
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(message, phase))


def _header_late(waiter: asyncio.Future, timeout: float) -> None:
    """The response head did not come within `timeout` (its message made only then)."""
    _expire(waiter, f"no response header within {timeout:g}s", "header")


class UpstreamResponse:
    """A response whose head has arrived; the body follows through `read`/`iter_chunks`."""

    def __init__(self, conn: _Conn, method: str, idle_timeout: float | None = None) -> None:
        self._conn = conn
        self.idle_timeout = idle_timeout
        parser = conn.parser
        self.status: int = parser.get_status_code()
        self.raw_reason: bytes = conn.status_text
        self.raw_headers: list[tuple[bytes, bytes]] = conn.headers  # as llhttp gave them
        self._headers: CIMultiDict | None = None
        self._done = False
        self._bodyless = method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200

    @property
    def reason(self) -> str:
        return self.raw_reason.decode("latin-1", "replace")

    @property
    def headers(self) -> CIMultiDict:
        """The head as a multidict, made on first use (the proxy's small-answer path reads
        `raw_headers` instead)."""
        if self._headers is None:
            self._headers = CIMultiDict(
                (n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw_headers
            )
        return self._headers

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
                conn.wakeup = wakeup = loop.create_future()
                if self.idle_timeout is None:
                    await wakeup
                else:
                    timer = loop.call_later(
                        self.idle_timeout, _expire, wakeup, f"no data for {self.idle_timeout:g}s", "idle"
                    )
                    try:
                        await wakeup
                    finally:
                        timer.cancel()
                conn.wakeup = None
        except BaseException:
            self._abort()
            raise
        self._finish()

    async def read(self) -> bytes:
        data = self.arrived()
        if data is not None:
            self._finish()
            return data
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    def arrived(self) -> bytes | None:
        """The whole body if it has arrived (a small answer comes with its head), else None;
        the connection goes back to its pool with `finish` (or `read`)."""
        conn = self._conn
        if conn.complete and conn.error is None and not self._bodyless and not self._done:
            chunks = conn.chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            conn.buffered = 0
            if conn.paused and conn.transport is not None:
                conn.paused = False
                conn.transport.resume_reading()
            return data
        return None

    def finish(self) -> None:
        """The body was read to its end (`arrived`): the connection may be reused."""
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        # A bodyless response the parser did not see end (HEAD: llhttp cannot know it has no
        # body) leaves the connection in an unknown state: never reuse it.
        conn.pool._release(
            conn, reuse=conn.complete and conn.keep_alive and conn.error is None and not conn.no_reuse
        )

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

    def __init__(self, host: str, port: int, connect_timeout: float | None = 30.0) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout  # when a request does not give its own
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._host_header = (
            f"{host}:{port}".encode("latin-1") if ":" not in host else f"[{host}]:{port}".encode()
        )
        # (method, target) -> its request line and Host header, encoded (bounded: targets
        # come from clients).
        self._lines: dict[tuple[str, str], bytes] = {}

    async def _connect(self, timeout: float | None, keepalive: float | None) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeout(
                f"cannot connect to {self.host}:{self.port} within {timeout:g}s", "connect"
            ) from None
        except OSError as exc:
            # asyncio words a refusal "Connect call failed (addr)"; say what the errno means.
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc) or type(exc).__name__
            raise UpstreamConnectError(f"cannot connect to {self.host}:{self.port}: {reason}") from exc
        if keepalive:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                set_keepalive(sock, keepalive)
        self._all.add(conn)
        return conn

    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _release(self, conn: _Conn, reuse: bool) -> None:
        if (
            reuse
            and not conn.closed
            and len(self._idle) < MAX_IDLE
            and conn.transport is not None
            and not conn.transport.is_closing()
        ):
            conn._reset()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        elif conn.transport is not None and not conn.transport.is_closing():
            conn.closed = True
            conn.transport.close()

    def _take_idle(self, idle_conn: float | None) -> _Conn | None:
        """The most recently used idle connection still worth using; older ones past
        `idle_conn` seconds are closed on the way."""
        now = time.monotonic()
        while self._idle:
            candidate = self._idle.pop()
            if candidate.closed or candidate.transport is None or candidate.transport.is_closing():
                continue
            if idle_conn is not None and now - candidate.idle_since > idle_conn:
                candidate.closed = True
                candidate.transport.close()
                continue
            return candidate
        return None

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] | bytes,
        body: bytes | AsyncIterable[bytes] | None,
        *,
        length: int | None = None,
        connect_timeout: float | None | _PoolDefault = POOL_DEFAULT,
        header_timeout: float | None = None,
        idle_timeout: float | None = None,
        idle_conn: float | None = None,
        keepalive: float | None = None,
    ) -> UpstreamResponse:
        """Send a request; return once the response head has arrived.

        `headers` are (name, value) pairs, or header lines already encoded (each ending in
        CRLF). `body` is bytes, or an async iterable of chunks sent as they come (with
        `Content-Length: length`, or chunked when `length` is None)."""
        fixed = body if isinstance(body, (bytes, bytearray)) else None
        streamed = body is not None and fixed is None
        key = (method, target)
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) >= 256:
                self._lines.clear()
            line = self._lines[key] = b"".join(
                (
                    method.encode("latin-1"),
                    b" ",
                    request_target(target),
                    b" HTTP/1.1\r\nHost: ",
                    self._host_header,
                    b"\r\n",
                )
            )
        head = [line]
        if isinstance(headers, bytes):
            head.append(headers)
        else:
            for name, value in headers:
                head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if streamed:
            head.append(
                b"Content-Length: %d\r\n" % length
                if length is not None
                else b"Transfer-Encoding: chunked\r\n"
            )
        elif fixed is not None and (fixed or method not in ("GET", "HEAD", "DELETE", "OPTIONS")):
            head.append(b"Content-Length: %d\r\n" % len(fixed))
        head.append(b"\r\n")
        if fixed:
            head.append(fixed)
        payload = b"".join(head)
        for attempt in (0, 1):
            conn = None if streamed else self._take_idle(idle_conn)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(
                    self.connect_timeout if isinstance(connect_timeout, _PoolDefault) else connect_timeout,
                    keepalive,
                )
            conn.used += 1
            loop = conn.loop
            conn.head = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                if streamed:
                    await self._send_body(conn, body, chunked=length is None)  # type: ignore[arg-type]
                if header_timeout is None:
                    await conn.head
                else:
                    # A timer that fails the head future (cheaper than asyncio.timeout's
                    # cancellation on a path taken once per request).
                    timer = loop.call_later(header_timeout, _header_late, conn.head, header_timeout)
                    try:
                        await conn.head
                    finally:
                        timer.cancel()
            except UpstreamClosed:
                if reused and attempt == 0 and not conn.got_bytes:
                    continue  # a stale keep-alive connection: try once more on a new one
                raise
            except BaseException:
                self._release(conn, reuse=False)
                raise
            return UpstreamResponse(conn, method, idle_timeout)
        raise UpstreamClosed("upstream closed the connection")  # pragma: no cover

    @staticmethod
    async def _send_body(conn: _Conn, body: AsyncIterable[bytes], chunked: bool) -> None:
        """Write the body as it comes, at the pace the upstream reads it; stop early (and
        never reuse the connection) if the upstream answers or goes away first."""
        transport = conn.transport
        assert transport is not None
        async for chunk in body:
            if conn.closed or conn.error is not None or (conn.head is not None and conn.head.done()):
                conn.no_reuse = True
                return
            if not chunk:
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await conn.drain()
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()


class UpstreamClient:
    """One pool per upstream base URL."""

    def __init__(self, connect_timeout: float | None = 30.0) -> None:
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
