"""Fastserver: the main listener's HTTP/1.1 front on httptools — it serves the model-dispatched
routes (and /v1/models, /health) itself, through the app's own gate and handlers, answers
/v1/models from the plan while the app is still starting, and hands every other connection
to aiohttp.

Why: aiohttp's request machinery (its protocol, Request, router and middleware chain) is most
of what a proxied request costs after llamaswap's own work (bench/README.md). This front does
only what those routes need, and nothing of what they promise changes, because the work is
the same code: `app.gate` (CORS preflight aside: auth, Host and cross-site checks), the
route's handler (`dispatch.model_route`: body limits, admission/429, the loading stream, the
scheduler's grant and release, filters, upstream timeouts), aiohttp's own Response objects
(prepared through the small writer below), the access log. One exception: a proxied answer
is written as bytes — a small one (a Content-Length body up to proxy.SMALL_BODY, not an
event stream) by `Request.answer` in one write, any other by `Request.answer_stream` (chunked
frames or its Content-Length, the head with the first body bytes): the upstream's header
lines as llhttp gave them (proxy.relay_head drops the hop-by-hop ones), then the headers
aiohttp would add.

Framing (what the hostile tests pin):
- A request head is parsed by httptools (llhttp) alone: malformed heads, Content-Length with
  Transfer-Encoding, duplicate or bad Content-Length, bare-LF line ends, upgrades, methods or
  paths this front does not serve: the connection is handed, untouched (every byte from the
  start of that request), to aiohttp's handler, which answers as it always has.
- A Content-Length body is sliced off exactly (pipelined requests after it stay buffered and
  are served in order, one at a time); a chunked body goes through llhttp and the connection
  closes after its response (what follows it on the wire is not read).
- Bounds: the head must be complete within `server.headerTimeout` of its first byte (408),
  an idle kept-alive connection closes after `server.keepaliveTimeout`, a head larger than
  MAX_HEAD (complete or not) goes to aiohttp, whose line limits decide, body bytes not yet read by the handler are
  held up to HIGH_WATER (then reading pauses), and the connection cap counts this front's
  connections and aiohttp's together. Body size and read timeouts are body.py's, as before.
- A client that goes away cancels its handler (as aiohttp's `handler_cancellation`); a body
  the handler did not read (a 413) is read and dropped for up to LINGER seconds, then the
  connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

logger = logging.getLogger("llamaswap.serve")

MAX_HEAD = 1 << 16  # a request head larger than this is aiohttp's to take or refuse (connections.py)
HIGH_WATER = 1 << 16  # unread body bytes held before reading pauses
MAX_PIPELINED = 1 << 20  # bytes of pipelined requests held while one is answered
LINGER = 10.0  # seconds an unread body is drained before the connection closes (aiohttp's lingering_time)


class HttpVersion(NamedTuple):
    major: int
    minor: int


HTTP11 = HttpVersion(1, 1)
HTTP10 = HttpVersion(1, 0)

Handler = Callable[[Any], Awaitable[Any]]


def _simple_response(status: int, reason: str, body: bytes, extra: str = "", close: bool = True) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n"
    ).encode("latin-1") + body


def _envelope(status: int, message: str) -> bytes:
    from llamaswap.runtime.errors import envelope

    return json.dumps(envelope(status, message), separators=(",", ":")).encode()


class Body:
    """A request body as it arrives (`request.content`): readany(), read(), at_eof()."""

    __slots__ = ("_conn", "_chunks", "_size", "_eof", "_waiter", "_error", "expect")

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        # The client sent `Expect: 100-continue` and waits for the 100 before its body: it
        # is sent when the handler first reads the body, so that a refusal (401, 403, 413,
        # 429 ...) answered before any read costs the client no upload.
        self.expect = False

    def _continue(self) -> None:
        self.expect = False
        self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def feed(self, data: bytes) -> None:
        self.expect = False  # the client sends its body without waiting for the 100
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def read_nowait(self) -> bytes:
        """What has arrived (b"" if nothing has), without waiting."""
        if self.expect:
            self._continue()
        if not self._chunks:
            if self._error is not None and not self._eof:
                raise self._error
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._conn.resume_reading()
        return data

    async def readany(self) -> bytes:
        if self.expect:
            self._continue()
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._conn.resume_reading()
        return data

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)


def _send_after_head(conn: Conn, head: bytes | None, parts: list[bytes]) -> None:
    """Writer's and RawStream's write: a head held back until the first body bytes goes out
    with them in one writelines (the caller then forgets its head)."""
    if head is not None:
        parts.insert(0, head)
    if parts:
        conn.writelines(parts)


class Writer:
    """What aiohttp's StreamResponse writes through (its `_payload_writer`): the head is held
    until the first body bytes (one packet for a small answer), chunked framing when enabled,
    a Content-Length answer never gets more bytes than it declared, flow control by drain."""

    __slots__ = ("_conn", "length", "chunked", "output_size", "buffer_size", "_head", "_eof")

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self.length: int | None = None
        self.chunked = False
        self.output_size = 0
        self.buffer_size = 0
        self._head: bytes | None = None
        self._eof = False

    def enable_chunking(self) -> None:
        self.chunked = True

    def enable_compression(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("compression is not available on the fast path")

    async def write_headers(self, status_line: str, headers: Any) -> None:
        lines = [status_line]
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError("newline or carriage return in a header name or value")
            lines.append(f"{name}: {value}")
        lines.append("\r\n")
        self._head = "\r\n".join(lines).encode("utf-8")

    def send_headers(self) -> None:
        if self._head is not None:
            self._conn.write(self._head)
            self._head = None

    def _frame(self, chunk: bytes) -> list[bytes]:
        if self.length is not None:
            if len(chunk) > self.length:
                chunk = chunk[: self.length]
            self.length -= len(chunk)
        if not chunk:
            return []
        self.output_size += len(chunk)
        if self.chunked:
            return [b"%x\r\n" % len(chunk), chunk, b"\r\n"]
        return [chunk]

    def _send(self, parts: list[bytes]) -> None:
        _send_after_head(self._conn, self._head, parts)
        self._head = None

    async def write(self, chunk: bytes, *, drain: bool = True, LIMIT: int = 0) -> None:
        self._send(self._frame(bytes(chunk)))
        if drain:
            await self._conn.drain()

    async def write_eof(self, chunk: bytes = b"") -> None:
        if self._eof:
            return
        parts = self._frame(bytes(chunk)) if chunk else []
        if self.chunked:
            parts.append(b"0\r\n\r\n")
        self._send(parts)
        self._eof = True
        await self._conn.drain()

    async def drain(self) -> None:
        await self._conn.drain()


# Header names as `Headers` looks them up (lower-case bytes), by the name the code asks for.
_KEYS: dict[str, bytes] = {}


def _key(name: str) -> bytes:
    # Header names are tokens (ASCII): a name outside latin-1 can match none ("?" is no
    # token character either).
    low = name.lower().encode("latin-1", "replace")
    if len(_KEYS) < 1024:  # the names come from the code and the config: few
        _KEYS[name] = low
    return low


class Headers(Mapping[str, str]):
    """A request head's headers as the handlers read them (`request.headers`): `get` and `in`
    answer from the head's bytes (what the request path asks: Host, Content-Type, Origin,
    Upgrade ...); anything else (items, getall, iteration, [...]) from a CIMultiDictProxy
    made on first use. Names and values read as UTF-8 with surrogate escapes, as before."""

    __slots__ = ("_raw", "_first", "_full")

    def __init__(self, raw: list[tuple[bytes, bytes]], first: dict[bytes, bytes] | None = None) -> None:
        self._raw = raw
        self._full: CIMultiDictProxy[str] | None = None
        if first is None:  # a head llhttp read: index it here
            first = {}
            for name, value in raw:
                first.setdefault(name.lower(), value)
        self._first = first

    @property
    def full(self) -> CIMultiDictProxy[str]:
        """All of the head as a CIMultiDictProxy (made once)."""
        if self._full is None:
            self._full = CIMultiDictProxy(
                CIMultiDict(
                    (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                    for n, v in self._raw
                )
            )
        return self._full

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(_KEYS.get(key) or _key(key))
        return default if value is None else value.decode("utf-8", "surrogateescape")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (_KEYS.get(key) or _key(key)) in self._first

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.full)

    def __len__(self) -> int:
        return len(self._raw)

    def keys(self) -> Any:
        return self.full.keys()

    def items(self) -> Any:
        return self.full.items()

    def values(self) -> Any:
        return self.full.values()

    def getall(self, key: str, *default: Any) -> Any:
        return self.full.getall(key, *default)

    def getone(self, key: str, *default: Any) -> Any:
        return self.full.getone(key, *default)

    def copy(self) -> CIMultiDict[str]:
        return self.full.copy()

    def __eq__(self, other: object) -> bool:
        return self.full == (other.full if isinstance(other, Headers) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Headers({list(self.items())!r})>"


class Request:
    """The part of aiohttp's `web.Request` that the fast routes' code reads."""

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "query_string",
        "headers",
        "version",
        "_keep_alive",
        "content",
        "app",
        "_conn",
        "_writer",
        "_state",
        "_query",
        "_body_exists",
        "task",
        "raw_headers",
        "upstream_lines",
        "answered",
    )

    scheme = "http"

    def __init__(
        self,
        conn: Conn,
        method: str,
        target: str,
        headers: Headers | CIMultiDictProxy[str],
        version: HttpVersion,
        keep_alive: bool,
        body_exists: bool,
    ) -> None:
        self._conn = conn
        self.method = method
        self.raw_path = target
        path, _, self.query_string = target.partition("?")
        self.path = path
        self.headers = headers
        self.version = version
        self._keep_alive = keep_alive
        self.content = Body(conn)
        self.app = conn.front.app
        self._writer: Writer | None = None  # made when an aiohttp Response is prepared
        self._state: dict[str, Any] = {}
        self._query: MultiDictProxy[str] | None = None
        self._body_exists = body_exists
        self.task: asyncio.Task | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []  # the head as llhttp gave it
        # Its header lines as they go upstream, when split_head read them (else None).
        self.upstream_lines: bytes | None = None
        # The streamed answer once begun: what the access log counts if the client leaves
        # mid-answer (the handler is cancelled before it can return it).
        self.answered: Any = None

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this answer: not when the
        answer comes before a body the client was waiting to be asked for (`Expect:
        100-continue` unanswered; the client may never send it, RFC 9110 10.1.1)."""
        return self._keep_alive and not self.content.expect

    @keep_alive.setter
    def keep_alive(self, value: bool) -> None:
        self._keep_alive = value

    @property
    def _payload_writer(self) -> Writer:
        """What aiohttp's StreamResponse writes through (not made for answers written as bytes)."""
        if self._writer is None:
            self._writer = Writer(self._conn)
        return self._writer

    # -- what handlers read -------------------------------------------------------------
    @property
    def path_qs(self) -> str:
        return self.raw_path

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(parse_qsl(self.query_string, keep_blank_values=True)))
        return self._query

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"
        ctype = _CONTENT_TYPES.get(raw)
        if ctype is None:
            ctype = raw.split(";", 1)[0].strip().lower()
            ctype = ctype if ctype.count("/") == 1 else "text/plain"
            if len(_CONTENT_TYPES) < 256 and len(raw) <= 256:  # clients send few of them
                _CONTENT_TYPES[raw] = ctype
        return ctype

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    @property
    def body_exists(self) -> bool:
        return self._body_exists

    @property
    def can_read_body(self) -> bool:
        return not self.content.at_eof()

    @property
    def transport(self) -> Any:
        return self._conn.transport

    @property
    def protocol(self) -> Conn:
        return self._conn

    @property
    def remote(self) -> str | None:
        return self._conn.peer

    async def read(self) -> bytes:
        return await self.content.read()

    # -- the request's own state (request["key"]) -----------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def get(self, key: str, default: Any = None) -> Any:
        return self._state.get(key, default)

    # -- small answers, written as bytes -------------------------------------------------
    def answer(
        self, status: int, reason: bytes, lines: bytes, body: bytes, content_type: bytes | None
    ) -> RawResponse:
        """Write a complete answer now, in one write: the status line, `lines` (header lines
        already encoded and filtered), Content-Length, Date, Server and the connection header
        as aiohttp writes them; then the body. Nothing is written once the client is gone
        (its handler is being cancelled)."""
        version = self.version
        keep = self.keep_alive
        parts = [
            b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, reason or _phrase(status)),
            lines,
        ]
        if content_type is None and body:
            parts.append(b"Content-Type: application/octet-stream\r\n")
        parts.append(b"Content-Length: %d\r\n" % len(body))
        self._end_head(parts, version, keep)
        parts.append(body)
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(parts))
        ctype = "application/octet-stream" if content_type is None else _media_type(content_type)
        return RawResponse(status, ctype, len(body), keep)

    def _end_head(self, parts: list[bytes], version: Any, keep: bool) -> None:
        """The head's last lines, shared by `answer` and `answer_stream`: Date, Server, the
        Connection header the version needs, and the blank line."""
        parts.append(_date_line())
        parts.append(self._conn.front.server_line)
        if not keep:
            if version == HTTP11:
                parts.append(b"Connection: close\r\n")
        elif version == HTTP10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")

    def answer_stream(
        self, status: int, reason: bytes, lines: bytes, length: int | None, content_type: bytes | None
    ) -> RawStream:
        """An answer whose body follows as it arrives (`RawStream.write`): the head as
        `answer` writes it, with Content-Length when `length` is known, else chunked (HTTP/1.1)
        or until the connection closes (HTTP/1.0). The head goes out with the first bytes."""
        version = self.version
        keep = self.keep_alive
        parts = [
            b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status, reason or _phrase(status)),
            lines,
        ]
        chunked = False
        if content_type is None and length != 0:
            parts.append(b"Content-Type: application/octet-stream\r\n")
        if length is not None:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif version == HTTP11:
            chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep = False  # an HTTP/1.0 body without a length ends with the connection
        self._end_head(parts, version, keep)
        ctype = "application/octet-stream" if content_type is None else _media_type(content_type)
        stream = self.answered = RawStream(self._conn, b"".join(parts), status, ctype, length, chunked, keep)
        return stream

    # -- what aiohttp's StreamResponse.prepare calls ------------------------------------
    async def _prepare_hook(self, response: Any) -> None:
        self.answered = response
        signal = self.app.on_response_prepare if self.app is not None else None
        if signal:
            await signal.send(self, response)


# A request's Content-Type as `Request.content_type` gives it, by the header's value.
_CONTENT_TYPES: dict[str, str] = {}


class RawResponse:
    """An answer `Request.answer` has already written: what the access log, the activity
    record and the connection's keep-alive decision read of it."""

    __slots__ = ("status", "content_type", "body_length", "keep_alive")

    prepared = True

    def __init__(self, status: int, content_type: str, body_length: int, keep_alive: bool) -> None:
        self.status = status
        self.content_type = content_type
        self.body_length = body_length
        self.keep_alive = keep_alive

    async def prepare(self, request: Any) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


class RawStream:
    """An answer written as it arrives (`Request.answer_stream`): what aiohttp's StreamResponse
    offers the proxy (write, write_eof, content_type, headers' Content-Type), with the head
    sent in the same write as the first body bytes, chunked framing when there is no length,
    never more bytes than a declared length, and the client's flow control (drain)."""

    __slots__ = (
        "_conn",
        "_head",
        "status",
        "content_type",
        "headers",
        "_left",
        "_chunked",
        "keep_alive",
        "body_length",
        "_eof",
    )

    prepared = True

    def __init__(
        self,
        conn: Conn,
        head: bytes,
        status: int,
        content_type: str,
        length: int | None,
        chunked: bool,
        keep_alive: bool,
    ) -> None:
        self._conn = conn
        self._head: bytes | None = head
        self.status = status
        self.content_type = content_type
        self.headers = {"Content-Type": content_type}
        self._left = length
        self._chunked = chunked
        self.keep_alive = keep_alive
        self.body_length = 0
        self._eof = False

    async def prepare(self, request: Any) -> None:
        return None

    @property
    def unsent(self) -> bool:
        """Nothing of this answer has reached the client yet (its head waits for the first
        body bytes): it can still be replaced by another answer."""
        return self._head is not None

    def _send(self, parts: list[bytes]) -> None:
        _send_after_head(self._conn, self._head, parts)
        self._head = None

    async def write(self, data: bytes) -> None:
        if self._eof:
            raise RuntimeError("cannot write to a finished answer")
        chunk = bytes(data)
        if self._left is not None:
            chunk = chunk[: self._left]
            self._left -= len(chunk)
        if chunk:
            self.body_length += len(chunk)
            self._send([b"%x\r\n" % len(chunk), chunk, b"\r\n"] if self._chunked else [chunk])
            await self._conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof:
            return
        if data:
            await self.write(data)
        self._eof = True
        self._send([b"0\r\n\r\n"] if self._chunked else [])
        await self._conn.drain()


# What the first byte of a request may be: a method's token character, or the empty line
# (CRLF) a client may send before the request line (RFC 9112 2.2).
_REQUEST_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n"
)


def _media_type(raw: bytes) -> str:
    """A Content-Type's media type, lower-case (aiohttp's `content_type`)."""
    found = _MEDIA_TYPES.get(raw)
    if found is None:
        found = raw.split(b";", 1)[0].strip().lower().decode("latin-1")
        if len(_MEDIA_TYPES) < 256 and len(raw) <= 256:  # an upstream's few Content-Types
            _MEDIA_TYPES[raw] = found
    return found


_MEDIA_TYPES: dict[bytes, str] = {}


_PHRASES: dict[int, bytes] = {}


def _phrase(status: int) -> bytes:
    phrase = _PHRASES.get(status)
    if phrase is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        _PHRASES[status] = phrase
    return phrase


_date_cache: list = [0, b""]


def _date_line() -> bytes:
    """`Date: ...` for this second (made once a second)."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        from email.utils import formatdate  # English names whatever the locale

        _date_cache[1] = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
    return _date_cache[1]


# What split_head accepts in a header name (RFC 9110's tchar), and the control characters
# it refuses in a value or a target (HTAB is allowed in a value).
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CTL = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_NO_OWS = b" \t"
# What split_head accepts in a target (RFC 3986's unreserved and reserved characters but "#",
# and "%"); anything else is llhttp's to judge.
_URL_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?[]@!$&'()*+,;=%"


# Request headers never forwarded upstream as they came (proxy.upstream_head's hop-by-hop
# headers and the ones it recomputes; a test checks that the two agree).
NOT_FORWARDED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
_PLAIN_TOKENS = frozenset({b"keep-alive", b"close", b""})
# Header lines split_head has read and accepted, with their (name, value, lower-case name, the
# line as it goes upstream or None):
# a client sends the same lines on every request. Not the lines split_head treats apart
# (Content-Length, Connection, the ones it refuses); bounded in count and line length (the
# lines come from clients).
_LINES: dict[bytes, tuple[bytes, bytes, bytes, bytes | None]] = {}
_LINES_MAX = 1024
_LINE_CACHED = 256
_SPECIAL = frozenset({b"content-length", b"transfer-encoding", b"upgrade", b"connection"})


class Split(NamedTuple):
    """A request head split_head read: target, header lines, Content-Length, keep-alive,
    each header name's first value by lower-case name (what `Headers.get` reads), and the
    header lines to send upstream (`proxy.upstream_head(headers)`; None: work them out)."""

    url: bytes
    headers: list[tuple[bytes, bytes]]
    version: HttpVersion
    length: int | None
    keep_alive: bool
    first: dict[bytes, bytes]
    upstream: bytes | None = None


_new_split = tuple.__new__


def split_head(head: bytes) -> Split | None:
    """Read a plain request head in one pass (CRLF lines, `name: value`), or None when it is
    anything else, for llhttp to judge as before: another version than HTTP/1.0 or 1.1, a
    target not in origin form or with other characters than RFC 3986's, a folded line (obs-fold), a name that is
    not a token or has whitespace before its colon, a value with control characters or
    trailing whitespace, a Content-Length that is not all digits or comes twice,
    Transfer-Encoding, Upgrade. `head` ends with the empty line (CRLF CRLF) and has no bare
    LF (the caller checks). Whatever it accepts, llhttp reads the same way."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    _, url, proto = parts
    if proto == b"HTTP/1.1":
        version = HTTP11
    elif proto == b"HTTP/1.0":
        version = HTTP10
    else:
        return None
    if url[:1] != b"/" or url.translate(None, _URL_CHARS):  # origin-form only
        return None
    headers: list[tuple[bytes, bytes]] = []
    first: dict[bytes, bytes] = {}
    length: int | None = None
    connection: list[bytes] = []
    forward: list[bytes] = []  # the lines as they go upstream
    seen = _LINES.get
    for line in lines[1:]:
        known = seen(line)
        if known is not None:  # a line read before (most of a client's lines, every time)
            name, value, low, up = known
            headers.append((name, value))
            if low not in first:
                first[low] = value
            if up is not None:
                forward.append(up)
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name.translate(None, _TCHAR):
            return None  # no colon, an empty name, obs-fold (a line starting with SP/HTAB)
        value = value.lstrip(_NO_OWS)
        if value[-1:] in (b" ", b"\t") or len(value.translate(None, _CTL)) != len(value):
            return None
        low = name.lower()
        up = None if low in NOT_FORWARDED else b"%s: %s\r\n" % (name, value)
        if low not in _SPECIAL and len(line) <= _LINE_CACHED:
            if len(_LINES) >= _LINES_MAX:
                _LINES.clear()
            _LINES[line] = (name, value, low, up)
        if low == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
        elif low == b"transfer-encoding" or low == b"upgrade":
            return None
        elif low == b"connection":
            connection.extend(t.strip(_NO_OWS).lower() for t in value.split(b","))
        headers.append((name, value))
        if low not in first:
            first[low] = value
        if up is not None:
            forward.append(up)
    if b"upgrade" in connection or (b"close" in connection and b"keep-alive" in connection):
        return None
    keep = b"close" not in connection if version is HTTP11 else b"keep-alive" in connection
    # A Connection header that names other headers makes them hop-by-hop too: proxy.upstream_head
    # works that out (rare).
    upstream = b"".join(forward) if _PLAIN_TOKENS.issuperset(connection) else None
    return _new_split(Split, (url, headers, version, length, keep, first, upstream))  # without Split.__new__


class _Head:
    """httptools' callbacks while one request head is parsed."""

    __slots__ = ("url", "headers", "done", "complete", "chunks")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False
        self.complete = False
        self.chunks: list[bytes] | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True

    def on_body(self, body: bytes) -> None:
        if self.chunks is not None:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Front:
    """The listener's protocol factory and what its connections share."""

    def __init__(
        self,
        *,
        header_timeout: float | None,
        keepalive_timeout: float | None,
        max_connections: int | None,
        early: Callable[[Request], bytes | None] | None = None,
    ) -> None:
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self.early = early  # answers before the app is attached (GET /v1/models), else None
        self.conns: set[Conn] = set()
        self.parked: list[Conn] = []
        self.app: Any = None
        self.routes: dict[tuple[bytes, bytes], Handler] = {}
        self.gate: Callable[[Any, Handler], Any] | None = None
        self.guard: Any = None
        self.access_log: Any = None
        self.errors: tuple[type[BaseException], ...] = ()
        self.closing = False
        self.server_line = b""  # `Server: ...` as aiohttp writes it (known once attached)

    def attach(
        self,
        app: Any,
        routes: dict[tuple[str, str], Handler],
        gate: Callable[[Any, Handler], Any],
        guard: Any,
        access_log: Any,
        http_exception: type[BaseException],
    ) -> None:
        """The app is ready: serve its fast `routes` through `gate`, hand the rest to aiohttp
        (`guard` is connections.ConnectionGuard: the cap over both kinds of connection, and
        aiohttp's protocol for one), and go on with the connections that waited."""
        self.app = app
        self.routes = {(m.encode(), p.encode()): h for (m, p), h in routes.items()}
        self.gate = gate
        guard.others = lambda: len(self.conns)
        self.guard = guard
        self.access_log = access_log
        self.errors = (http_exception,)
        from aiohttp.http import SERVER_SOFTWARE  # loaded with the app by now

        self.server_line = f"Server: {SERVER_SOFTWARE}\r\n".encode()
        parked, self.parked = self.parked, []
        for conn in parked:
            conn.process()

    def __call__(self) -> asyncio.Protocol:
        if self.guard is not None:
            refused = self.guard.refusal()
            if refused is not None:
                return refused
        elif self.max_connections is not None and len(self.conns) >= self.max_connections:
            return _EarlyRefuse(self.max_connections)
        return Conn(self)

    def close_idle(self) -> None:
        """Shutdown: stop serving new requests; idle connections close now, busy ones after
        their response."""
        self.closing = True
        for conn in list(self.conns):
            if conn.request is None:
                conn.close()

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close()


class _EarlyRefuse(asyncio.Protocol):
    """Over the connection cap before the app is up: 503 and close."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: Any) -> None:
        body = _envelope(503, f"too many connections (server.maxConnections = {self.cap}); try again later")
        transport.write(_simple_response(503, "Service Unavailable", body, "Retry-After: 1\r\n"))
        transport.close()


class Conn(asyncio.Protocol):
    """One client connection while this front serves it."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.loop = asyncio.get_running_loop()
        self.transport: Any = None
        self.peer: str | None = None
        self.buf = bytearray()
        self.request: Request | None = None  # the request being answered
        self.body_left = 0  # Content-Length bytes of `request` still to come
        self.parser: httptools.HttpRequestParser | None = None  # a chunked body in progress
        self.head: _Head | None = None
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.header_timer: asyncio.TimerHandle | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.close_after = False  # close once the current response is written
        self.abort_after = False  # the same, without draining an unread body first
        self.no_more = False  # a chunked body was read: no request after it is
        self.draining = False  # dropping the unread rest of a body after its response
        self.keep_after_drain = False
        self.linger: asyncio.TimerHandle | None = None
        self.closed = False
        self.handed = False

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.front.conns.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.parser is not None:  # a chunked body: llhttp frames it
            self._feed_chunked(data)
            return
        if self.body_left:
            take = data if len(data) <= self.body_left else data[: self.body_left]
            self.body_left -= len(take)
            if self.draining:
                if not self.body_left:
                    self._drained()
            else:
                assert self.request is not None
                self.request.content.feed(take)
                if not self.body_left:
                    self.request.content.feed_eof()
            if len(take) == len(data):
                return
            data = data[len(take) :]
        if self.no_more:
            return  # after a chunked body nothing more is read: the connection closes
        self.buf += data
        self.process()

    def eof_received(self) -> bool | None:
        return None  # close, as aiohttp does

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.front.conns.discard(self)
        if self in self.front.parked:
            self.front.parked.remove(self)
        for timer in (self.header_timer, self.idle_timer, self.linger):
            if timer is not None:
                timer.cancel()
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionResetError("the client went away"))
        req = self.request
        if req is not None:
            req.content.fail(ConnectionResetError("the client went away"))
            if req.task is not None and not req.task.done():
                req.task.cancel()  # as aiohttp's handler_cancellation

    # -- writing --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self.transport.write(b"".join(parts) if len(parts) > 1 else parts[0])

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drain_waiter = self.loop.create_future()
            try:
                await self.drain_waiter
            finally:
                self.drain_waiter = None
        elif self.closed:
            raise ConnectionResetError("the client went away")

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def force_close(self) -> None:
        """aiohttp's `protocol.force_close()`: close as soon as the current answer is out,
        without reading what is left of its body."""
        self.abort_after = True
        if self.request is None:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- requests -------------------------------------------------------------------------
    def process(self) -> None:
        """Serve the next buffered request if its head is complete (one at a time)."""
        front = self.front
        if self.request is not None or self.handed or self.closed:
            if len(self.buf) > MAX_PIPELINED:
                self.pause_reading()
            return
        buf = self.buf
        if not buf:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if buf[0] not in _REQUEST_START:
                # No HTTP request starts so (a TLS handshake sent to this plain-HTTP port, a
                # binary protocol): aiohttp's parser answers 400 at once, instead of the
                # client waiting for a head that never completes until server.headerTimeout.
                self._hand_off()
                return
            if buf.find(b"\n\n") >= 0 or buf.find(b"\n\r\n") >= 0:
                self._hand_off()  # a head ended with bare LFs: aiohttp's parser decides, as before
                return
            if len(buf) > MAX_HEAD:
                self._hand_off()
                return
            self._arm_header_timer()
            return
        head_len = end + 4
        if head_len > MAX_HEAD:
            self._hand_off()  # as an incomplete one: aiohttp's limits decide, whatever the segments
            return
        # Any bare LF in the head (a bare-LF end of head before the CRLF one included): aiohttp's
        # parser decides, as before. Counted within the head only: the body may be large.
        if buf.count(b"\n", 0, head_len) != buf.count(b"\r\n", 0, head_len):
            self._hand_off()
            return
        line_end = buf.find(b"\r\n")
        request_line = bytes(buf[:line_end]).split(b" ")
        if len(request_line) != 3:
            self._hand_off()
            return
        method, target, _ = request_line
        path = target.split(b"?", 1)[0]
        if front.app is None:
            self._before_app(method, path, head_len)
            return
        handler = front.routes.get((method, path))
        if handler is None:
            self._hand_off()
            return
        head = bytes(buf[:head_len])
        split = split_head(head)
        chunked = False
        h: _Head | None = None
        first: dict[bytes, bytes] | None = None
        upstream_lines = None
        if split is not None:  # a plain head (nearly every request): read in one pass
            url, raw_headers, version, length, keep_alive, first, upstream_lines = split
        else:  # anything else: llhttp judges it, as before
            h = _Head()
            parser = httptools.HttpRequestParser(h)
            try:
                parser.feed_data(head)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._hand_off()  # bad lengths, CL with TE, upgrades: aiohttp answers as before
                return
            if not h.done:
                self._hand_off()
                return
            length = None
            for name, value in h.headers:
                low = name.lower()
                if low == b"content-length":
                    length = int(value)
                elif low == b"transfer-encoding":
                    chunked = True
                elif low == b"upgrade":
                    self._hand_off()
                    return
            if chunked and not h.complete and parser.get_http_version() != "1.1":
                self._hand_off()
                return
            url, raw_headers = h.url, h.headers
            version = HTTP11 if parser.get_http_version() == "1.1" else HTTP10
            keep_alive = parser.should_keep_alive()
        self._cancel_header_timer()
        self._cancel_idle()
        del buf[:head_len]
        headers = Headers(raw_headers, first)
        req = Request(
            self,
            method.decode("ascii"),
            url.decode("utf-8", "surrogateescape"),
            headers,
            version,
            keep_alive,
            chunked or bool(length),
        )
        req.raw_headers = raw_headers
        req.upstream_lines = upstream_lines
        self.request = req
        content = req.content
        if chunked:
            assert h is not None
            req.keep_alive = False  # what follows a chunked body is not read
            self.close_after = True
            h.chunks = []
            self.head = h
            self.parser = parser
            rest = bytes(buf)
            buf.clear()
            if rest:
                self._feed_chunked(rest)
        elif length:
            take = min(length, len(buf))
            if take:
                content.feed(bytes(buf[:take]))
                del buf[:take]
            self.body_left = length - take
            if not self.body_left:
                content.feed_eof()
        else:
            content.feed_eof()
        if (
            (self.body_left or self.parser is not None)
            and headers.get("Expect", "").lower() == "100-continue"
            and version == HTTP11
        ):
            content.expect = True
        req.task = self.loop.create_task(self._serve(req, handler))

    def _feed_chunked(self, data: bytes) -> None:
        req, h, parser = self.request, self.head, self.parser
        assert h is not None and parser is not None
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.parser = None
            self.no_more = True
            if self.draining:
                self.close()
            elif req is not None:
                h.chunks = None
                req.content.fail(_bad_body(exc))
            return
        if h.chunks:
            if req is not None and not self.draining:
                for chunk in h.chunks:
                    req.content.feed(chunk)
            h.chunks.clear()
        if h.complete:
            self.parser = None
            self.no_more = True
            if self.draining:
                self._drained()
            elif req is not None:
                req.content.feed_eof()

    def _before_app(self, method: bytes, path: bytes, head_len: int) -> None:
        """The app is still starting: answer what `early` can, park the rest until attach."""
        early = self.front.early
        answer = None
        if early is not None and method == b"GET":
            head = bytes(self.buf[:head_len])
            h = _Head()
            parser = httptools.HttpRequestParser(h)
            try:
                parser.feed_data(head)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                h.done = False
            if h.done and h.complete:
                headers = CIMultiDictProxy(
                    CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in h.headers)
                )
                req = Request(self, "GET", h.url.decode("latin-1"), headers, HTTP11, False, False)
                answer = early(req)
        if answer is None:
            self._cancel_header_timer()
            if self not in self.front.parked:
                self.front.parked.append(self)
            return
        del self.buf[:head_len]
        self._cancel_header_timer()
        self.write(answer)
        self.close()  # the early answer says `Connection: close`

    def _hand_off(self) -> None:
        """Give this connection (with every byte from the start of the current request) to
        aiohttp's handler for the rest of its life."""
        front = self.front
        if front.guard is None:  # not attached yet: wait for it
            if self not in front.parked:
                front.parked.append(self)
            return
        self._cancel_header_timer()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.handed = True
        front.conns.discard(self)
        transport = self.transport
        data = bytes(self.buf)
        self.buf.clear()
        proto = front.guard.handler()
        self.resume_reading()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if data:
            proto.data_received(data)

    async def _serve(self, req: Request, handler: Handler) -> None:
        front = self.front
        started = self.loop.time()
        resp: Any = None
        try:
            try:
                assert front.gate is not None
                resp = front.gate(req, handler)
                if resp is None:
                    resp = await handler(req)
            except front.errors as exc:  # web.HTTPException: it is its own response
                resp = exc
            if resp is not None and type(resp) is not RawResponse:  # a RawResponse is written
                if not resp.prepared:
                    await resp.prepare(req)
                await resp.write_eof()
        except asyncio.CancelledError:
            self.close_after = True
            if resp is None:
                resp = req.answered if req.answered is not None else _Gone()
        except (ConnectionError, RuntimeError) as exc:
            if not isinstance(exc, ConnectionError) and "closing transport" not in str(exc):
                logger.exception("error handling %s %s", req.method, req.path)
            self.close_after = True
        except Exception:
            logger.exception("error handling %s %s", req.method, req.path)
            self.close_after = True
            if resp is None or not getattr(resp, "prepared", False):
                try:
                    body = _envelope(500, "internal server error")
                    self.write(_simple_response(500, "Internal Server Error", body))
                except ConnectionError:
                    pass
                resp = _Gone(500)
        finally:
            access = front.access_log
            if access is not None and resp is not None and access.enabled:
                access.log(req, resp, self.loop.time() - started)
            self._done(req, resp)

    def _done(self, req: Request, resp: Any) -> None:
        self.request = None
        if self.closed:
            return
        if self.abort_after:
            self.close()
            return
        keep = (
            req.keep_alive
            and not self.close_after
            and not self.no_more
            and resp is not None
            and getattr(resp, "keep_alive", True) is not False
            and not self.front.closing
        )
        if self.body_left or self.parser is not None:
            # The handler did not read its whole body (a 413, a refusal): read and drop the
            # rest for a moment (so that the client sees the answer), then go on or close.
            self.draining = True
            self.keep_after_drain = keep
            self.resume_reading()
            self.linger = self.loop.call_later(LINGER, self.close)
            return
        if keep:
            self._next()
        else:
            self.close()

    def _drained(self) -> None:
        self.draining = False
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.keep_after_drain and not self.no_more and not self.front.closing:
            self._next()
        else:
            self.close()

    def _next(self) -> None:
        self.resume_reading()
        if self.buf:
            self.process()  # a pipelined request
        else:
            self._arm_idle()

    # -- timers -----------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        self._cancel_idle()
        t = self.front.header_timeout
        if t is not None and self.header_timer is None:
            self.header_timer = self.loop.call_later(t, self._header_late)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_late(self) -> None:
        self.header_timer = None
        if self.request is not None or self.closed or self.handed:
            return
        t = self.front.header_timeout
        logger.warning(
            "request header timeout: %s sent no complete request head within %gs (server.headerTimeout); closing",
            self.peer or "a client",
            t,
        )
        body = _envelope(408, f"request header timeout ({t:g}s, server.headerTimeout)")
        try:
            self.write(_simple_response(408, "Request Timeout", body))
        except ConnectionError:
            pass
        self.close()

    def _arm_idle(self) -> None:
        """The connection is idle from now on. One timer per connection, re-armed only when
        it fires (a request costs a float store, not a timer)."""
        self.idle_since = self.loop.time()
        t = self.front.keepalive_timeout
        if t is not None and self.idle_timer is None:
            self.idle_timer = self.loop.call_later(t, self._idle_late)

    def _cancel_idle(self) -> None:
        pass  # busy now: `_idle_late` sees it and waits for the next idle spell

    def _idle_late(self) -> None:
        self.idle_timer = None
        t = self.front.keepalive_timeout
        if self.closed or self.handed or t is None:
            return
        if self.request is not None or self.buf or self.draining:
            self.idle_timer = self.loop.call_later(t, self._idle_late)  # busy: check again later
            return
        left = self.idle_since + t - self.loop.time()
        if left > 0.001:
            self.idle_timer = self.loop.call_later(left, self._idle_late)
            return
        self.close()


class _Gone:
    """Stands for the response of a request whose client left (for the access log)."""

    keep_alive = False
    body_length = 0

    def __init__(self, status: int = 499) -> None:
        self.status = status


def _bad_body(exc: BaseException) -> Exception:
    from llamaswap.runtime.body import BodyError

    return BodyError(400, f"malformed chunked request body: {exc}")


def early_models(plan: Any, started: float) -> Callable[[Request], bytes | None]:
    """GET /v1/models (and /models) before the app is attached: nothing runs yet, so every
    model is listed as not loaded. Only for requests every gate would pass — no apiKeys, and
    a Host that is an IP literal or localhost; anything else waits for the app."""
    from llamaswap.runtime.listing import model_records

    keys = plan.config.api_keys if plan.config is not None else ()

    def answer(req: Request) -> bytes | None:
        if keys or req.path not in ("/v1/models", "/models") or req.query_string:
            return None
        if not _local_host(req.headers.get("Host")):
            return None
        data = model_records(plan, int(started), loaded=lambda m: False, active=lambda m: False)
        body = json.dumps({"object": "list", "data": data}).encode()
        extra = ""
        origin = req.headers.get("Origin")
        if origin is not None:
            if "\r" in origin or "\n" in origin:
                return None
            extra = f"Access-Control-Allow-Origin: {origin}\r\n"
        return _simple_response(200, "OK", body, _date_line().decode() + extra)

    return answer


def _local_host(value: str | None) -> bool:
    if not value:
        return True
    host = value.strip().lower()
    if host.startswith("["):
        return True  # an IPv6 literal
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if host == "localhost" or host.endswith(".localhost"):
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
