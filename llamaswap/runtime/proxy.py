"""Proxy: forward one HTTP request to an upstream and stream its answer back.

Invariants:
- Bodies are passed through byte for byte (the client session never decompresses), and
  streamed responses are written chunk by chunk as they arrive: SSE is never buffered.
- Hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`) are dropped both ways.
- A client that goes away cancels the handler (the app runs with handler cancellation);
  leaving the `async with` closes the upstream connection, which cancels the upstream's work.
- Before the response has started, an upstream failure becomes a 502 envelope; after it has
  started, the connection is aborted (`UpstreamBroke`): the status line is already gone, and
  a clean end would pass a truncated answer off as complete. An event stream first gets one
  last SSE error event saying why (502: the upstream broke off), so that SSE clients report it.
- Every wait on the upstream is bounded by the model's timeouts: connect, the response head
  (`UpstreamTimedOut` -> 504 before anything is sent) and the gap between two body chunks
  (before the response started: 504; after: an SSE error event for event streams, then the
  connection is aborted).
- The request target goes upstream exactly as the client sent it (still percent-encoded).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp import web
from multidict import CIMultiDict

from llamaswap.runtime.body import StreamBody
from llamaswap.runtime.errors import envelope_bytes
from llamaswap.runtime.fastserver import Request as FastRequest
from llamaswap.runtime.limits import UpstreamTimeouts
from llamaswap.runtime.upstream import (
    UpstreamClient,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamResponse,
    UpstreamTimeout,
)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never forwarded upstream: recomputed (length, host), or already handled (the body has been
# read whole, so `Expect: 100-continue` is answered here, not by the upstream).
_NOT_UPSTREAM = frozenset({"host", "content-length", "expect"})
_NOT_DOWNSTREAM = frozenset({"content-length", "date", "server"})
SMALL_BODY = 1 << 20
# Request key: the client's response once it has been prepared (a cancel must end that one).
STARTED_RESPONSE = "llamaswap.response"
# Request keys: why the server ended this request while it was served (the message for the
# client; the scheduler's reason, "reload" | "unload" | "shutdown"); set before its task is
# cancelled, so the answer says so (a WebSocket closes with 1012 after a reload, else 1001).
ENDED_BY = "llamaswap.ended_by"
ENDED_FOR = "llamaswap.ended_for"
# Request key: (the upstream's base URL, the path it is mounted at here) of a passthrough
# (`/upstream/<model>`, `/comfyui`): its redirects are rewritten to stay under the mount.
MOUNT = "llamaswap.mount"


def mounted_location(location: str, base: str, mount: str) -> str:
    """A passthrough upstream's `Location`, as the client must follow it: one on the
    upstream's own base URL (what a server that builds absolute URLs from the Host header
    it got sends) or root-relative (the upstream's root, within the base URL's path) goes
    under `mount`; others stay as they are."""
    if location.startswith("/") and not location.startswith("//"):
        path = urlsplit(base).path.rstrip("/")
        if not path:
            return mount + location
        if location == path or location.startswith((path + "/", path + "?")):
            rest = location[len(path) :]
            return mount + (rest if rest.startswith("/") else "/" + rest)
        return location  # outside the base path: nothing here maps to it
    n = len(base)
    if location[:n].lower() == base.lower() and location[n : n + 1] in ("", "/", "?", "#"):
        rest = location[n:]
        return mount + (rest if rest.startswith("/") else "/" + rest)
    return location


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    tokens: set[str] = set()
    if "Connection" not in headers:
        return tokens
    for value in (
        headers.getall("Connection", []) if hasattr(headers, "getall") else [headers.get("Connection", "")]
    ):
        for tok in value.split(","):
            tok = tok.strip().lower()
            if tok:
                tokens.add(tok)
    return tokens


def upstream_headers(headers: Mapping[str, str], drop: frozenset[str] = frozenset()) -> CIMultiDict:
    named = _connection_tokens(headers)
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        low = key.lower()
        if low in HOP_BY_HOP or low in named or low in _NOT_UPSTREAM or low in drop:
            continue
        out.add(key, value)
    return out


def downstream_headers(headers: Mapping[str, str]) -> CIMultiDict:
    named = _connection_tokens(headers)
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        low = key.lower()
        if low in HOP_BY_HOP or low in named or low in _NOT_DOWNSTREAM:
            continue
        out.add(key, value)
    return out


# The same sets as bytes, for heads kept as httptools gave them (the fast front's requests,
# the lean client's responses): filtered and passed on as raw lines, no multidict between.
_HOP_BY_HOP_B = frozenset(h.encode() for h in HOP_BY_HOP)
_NOT_UPSTREAM_B = frozenset(h.encode() for h in _NOT_UPSTREAM)
_NOT_DOWNSTREAM_B = frozenset(h.encode() for h in _NOT_DOWNSTREAM)


# `Connection` values that name no other header (what nearly every peer sends).
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


def _connection_tokens_raw(raw: list[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            for tok in value.split(b","):
                tok = tok.strip().lower()
                if tok:
                    tokens.add(tok)
    return tokens


def upstream_head(
    raw: list[tuple[bytes, bytes]], drop: frozenset[str] = frozenset(), add: Mapping[str, str] | None = None
) -> bytes:
    """`upstream_headers` (then `add`) for a head kept as bytes: the encoded header lines."""
    out = []
    named = False
    for name, value in raw:
        low = name.lower()
        if low in _HOP_BY_HOP_B or low in _NOT_UPSTREAM_B:
            named = named or (low == b"connection" and value.lower() not in _PLAIN_CONNECTION)
            continue
        if drop and low.decode("latin-1") in drop:
            continue
        out.append((low, b"%s: %s\r\n" % (name, value)))
    if named:  # headers the Connection header names are hop-by-hop too (rare)
        tokens = _connection_tokens_raw(raw)
        out = [item for item in out if item[0] not in tokens]
    lines = [line for _, line in out]
    if add:
        lines.append(_added(add))
    return b"".join(lines)


def _added(add: Mapping[str, str]) -> bytes:
    """`add_headers` as header lines."""
    return b"".join(f"{key}: {text}\r\n".encode("latin-1", "replace") for key, text in add.items())


_XAB = b"x-accel-buffering"


def relay_head(
    raw: list[tuple[bytes, bytes]], extra: Mapping[str, str] | None = None
) -> tuple[bytes, bytes | None, bytes | None, bool] | None:
    """The client's head for a relayed answer, in one pass over the upstream's: the headers
    `downstream_headers` keeps, then `extra` (which replace headers of the same name), and
    when the answer is an event stream (its kept Content-Type says text/event-stream)
    `X-Accel-Buffering: no` last, in place of the upstream's own; (lines, Content-Length,
    Content-Type, is it an event stream), or None if an `extra` value cannot be a header."""
    replaced = {k.lower().encode("latin-1", "replace") for k in extra} if extra else ()
    out = []
    length = ctype = None
    named = xab = False
    for name, value in raw:
        low = name.lower()
        if low == b"content-length":
            length = value
            continue
        if low == b"content-type":
            ctype = value
        elif low in _HOP_BY_HOP_B or low in _NOT_DOWNSTREAM_B:
            named = named or (low == b"connection" and value.lower() not in _PLAIN_CONNECTION)
            continue
        elif low == _XAB:
            xab = True
        if low in replaced:
            continue
        out.append((low, b"%s: %s\r\n" % (name, value)))
    if named:  # headers the Connection header names are hop-by-hop too (rare)
        tokens = _connection_tokens_raw(raw)
        out = [item for item in out if item[0] not in tokens]
        if b"content-type" in tokens:
            ctype = None
    event_stream = _is_event_stream_type(ctype)
    if event_stream and xab:
        out = [item for item in out if item[0] != _XAB]
    lines = [line for _, line in out]
    if extra:
        for key, text in extra.items():
            if "\r" in key or "\n" in key or "\r" in text or "\n" in text:
                return None
            lines.append(f"{key}: {text}\r\n".encode())
    if event_stream:
        lines.append(b"X-Accel-Buffering: no\r\n")
    return b"".join(lines), length, ctype, event_stream


def _is_event_stream_type(ctype: bytes | None) -> bool:
    return ctype is not None and ctype.split(b";")[0].strip().lower() == b"text/event-stream"


def is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/event-stream"


class UpstreamError(Exception):
    """The upstream could not be reached or failed before answering."""


class UpstreamTimedOut(Exception):
    """A bounded wait on the upstream ran out before the response started (answered 504)."""


def sse_error(status: int, message: str) -> bytes:
    """An SSE event carrying llama-swap's error envelope (for streams already under way)."""
    return b"data: " + envelope_bytes(status, message) + b"\n\n"


_KEYS = {"connect": "timeouts.connect", "header": "timeouts.responseHeader", "idle": "timeouts.streamIdle"}


def _timeout_message(exc: UpstreamTimeout) -> str:
    return f"{exc} ({_KEYS[exc.phase]})"


class UpstreamBroke(Exception):
    """The upstream failed after the response had started; the client connection must be
    aborted (a clean end would pass a truncated answer off as complete)."""

    def __init__(self, message: str, response: web.StreamResponse) -> None:
        super().__init__(message)
        self.response = response


async def forward(
    request: web.Request,
    upstreams: UpstreamClient,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes | StreamBody | None,
    *,
    drop_headers: frozenset[str] = frozenset(),
    add_headers: Mapping[str, str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    response: web.StreamResponse | None = None,
    timeouts: UpstreamTimeouts | None = None,
    tap: Callable[[bytes], None] | None = None,
    via: str | None = None,
) -> web.StreamResponse:
    """Send the request to `url` and relay the answer.

    Plain-HTTP upstreams go through the lean pooled client (`upstream.py`); HTTPS upstreams,
    HEAD requests and protocol upgrades through aiohttp's client. `body` is bytes, a
    StreamBody (forwarded as it arrives), or None (the request's own body, read whole).
    `drop_headers` are not sent upstream, `add_headers` are sent in their place.

    With `response` (an already prepared stream, e.g. after a loading-state preamble), only
    the upstream body is written into it and its status/headers are not sent again.
    `tap` sees every body chunk relayed (the activity store reads usage from the tail).
    `via`: a forward proxy's URL (envproxy.py) the request goes through (aiohttp's client).
    """
    # The authority ends at the first "/", "?" or "#" after "//" (as urlsplit has it); the
    # origin's host and port are worked out once per upstream, not per request.
    start = url.find("://") + 3
    end = len(url)
    for sep in "/?#":
        at = url.find(sep, start)
        if 0 <= at < end:
            end = at
    origin = _plain_origin(url[:end]) if start > 2 else None
    if via is not None or origin is None or request.method == "HEAD" or "upgrade" in request.headers:
        return await _forward_aiohttp(
            request,
            session,
            url,
            body,
            drop_headers=drop_headers,
            add_headers=add_headers,
            extra_headers=extra_headers,
            response=response,
            timeouts=timeouts,
            tap=tap,
            via=via,
        )
    # Everything after the authority, untouched: urlsplit would drop a `#` and re-join parts.
    target = url[end:] or "/"
    if not target.startswith("/"):
        target = "/" + target
    host, port = origin
    if port < 0:
        raise UpstreamError(f"bad upstream URL {url!r}")
    raw = getattr(request, "raw_headers", None)  # the fast front's requests keep their head as bytes
    lines = request.upstream_lines if type(request) is FastRequest and not drop_headers else None
    if lines is not None:  # what upstream_head(raw, add=add_headers) gives, read with the head
        head: bytes | Any = lines + _added(add_headers) if add_headers else lines
    elif raw is not None:
        head = upstream_head(raw, drop_headers, add_headers)
    else:
        headers = upstream_headers(request.headers, drop_headers)
        if add_headers:
            headers.extend(add_headers)
        head = headers.items()
    t = timeouts
    if body is None:
        body = await request.read()
    data, length = (body.chunks, body.length) if isinstance(body, StreamBody) else (body, None)
    try:
        pool = upstreams.pool(host, port)
        if t is None:
            upstream = await pool.request(request.method, target, head, data, length=length)
        else:
            upstream = await pool.request(
                request.method,
                target,
                head,
                data,
                length=length,
                connect_timeout=t.connect,
                header_timeout=t.response_header,
                idle_timeout=t.stream_idle,
                idle_conn=t.idle_conn,
                keepalive=t.keepalive,
            )
    except UpstreamTimeout as exc:
        raise UpstreamTimedOut(_timeout_message(exc)) from exc
    except (UpstreamConnectError, UpstreamClosed, OSError) as exc:
        raise UpstreamError(str(exc) or type(exc).__name__) from exc
    return await _relay(
        request,
        upstream,
        upstream.iter_chunks,
        upstream.read,
        upstream.close,
        (UpstreamClosed, ConnectionError),
        extra_headers,
        response,
        tap,
    )


@functools.lru_cache(maxsize=256)
def _plain_origin(origin: str) -> tuple[str, int] | None:
    """(host, port) of a plain-HTTP `scheme://authority` (port -1: not a valid port); None
    when it is not plain HTTP or names no host (aiohttp's client takes those)."""
    parts = urlsplit(origin)
    if parts.scheme != "http" or parts.hostname is None:
        return None
    try:
        return parts.hostname, parts.port or 80
    except ValueError:
        return parts.hostname, -1


async def _forward_aiohttp(
    request: web.Request,
    session: aiohttp.ClientSession,
    url: str,
    body: bytes | StreamBody | None,
    *,
    drop_headers: frozenset[str] = frozenset(),
    add_headers: Mapping[str, str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    response: web.StreamResponse | None = None,
    timeouts: UpstreamTimeouts | None = None,
    tap: Callable[[bytes], None] | None = None,
    via: str | None = None,
) -> web.StreamResponse:
    headers = upstream_headers(request.headers, drop_headers)
    if add_headers:
        headers.extend(add_headers)
    data: Any
    if isinstance(body, StreamBody):
        data = body.chunks
        if body.length is not None:
            headers["Content-Length"] = str(body.length)
    else:
        data = body if body is not None else request.content
    header_timeout = timeouts.response_header if timeouts is not None else None
    idle = timeouts.stream_idle if timeouts is not None else None
    try:
        up_cm = session.request(
            request.method,
            yarl.URL(url, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
            proxy=via,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=timeouts.connect if timeouts else 30,
                sock_connect=timeouts.connect if timeouts else 30,
            ),
        )
        async with asyncio.timeout(header_timeout):
            upstream = await up_cm.__aenter__()
    except TimeoutError as exc:
        raise UpstreamTimedOut(
            f"no response header within {header_timeout:g}s (timeouts.responseHeader)"
            if header_timeout is not None
            else "connect timeout (timeouts.connect)"
        ) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def chunks() -> AsyncIterator[bytes]:
        it = upstream.content.iter_any().__aiter__()
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UpstreamTimeout(f"no data for {idle:g}s", "idle") from None
            yield chunk

    async def read() -> bytes:
        return b"".join([c async for c in chunks()])

    try:
        return await _relay(
            request,
            upstream,
            chunks,
            read,
            upstream.close,
            (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError),
            extra_headers,
            response,
            tap,
        )
    finally:
        await up_cm.__aexit__(None, None, None)


async def _relay(
    request: web.Request,
    upstream: Any,
    chunks: Callable[[], AsyncIterator[bytes]],
    read: Callable[[], Awaitable[bytes]],
    close: Callable[[], None],
    broken: tuple[type[BaseException], ...],
    extra_headers: Mapping[str, str] | None,
    response: web.StreamResponse | None,
    tap: Callable[[bytes], None] | None = None,
) -> web.StreamResponse:
    """Relay an upstream response (status, headers, body as it arrives) to the client."""
    started: web.StreamResponse | None = response
    try:
        if response is not None:
            async for chunk in chunks():
                if tap is not None:
                    tap(chunk)
                await response.write(chunk)
            return response
        # The fast front's requests (fastserver.Request) get the lean client's answers
        # (UpstreamResponse) written as bytes.
        if (
            type(upstream) is UpstreamResponse
            and type(request) is FastRequest
            and upstream.status >= 200
            and upstream.status not in (204, 304)
        ):
            # An event stream's head gets X-Accel-Buffering (relay_head: one pass).
            head = relay_head(upstream.raw_headers, extra_headers)
            if head is not None:
                lines, raw_length, ctype, event_stream = head
                length = int(raw_length) if raw_length is not None and raw_length.isdigit() else None
                if length is not None and length <= SMALL_BODY and not event_stream:
                    payload = upstream.arrived()  # (it usually came with the head)
                    if payload is None:
                        payload = await read()
                    answered = request.answer(upstream.status, upstream.raw_reason, lines, payload, ctype)
                    # After the client's write: the connection back to its pool, the tap.
                    upstream.finish()
                    if tap is not None:
                        tap(payload)
                    return answered
                raw_stream = request.answer_stream(upstream.status, upstream.raw_reason, lines, length, ctype)
                started = request[STARTED_RESPONSE] = raw_stream
                async for chunk in chunks():
                    if tap is not None:
                        tap(chunk)
                    await raw_stream.write(chunk)
                await raw_stream.write_eof()
                return raw_stream
        out_headers = downstream_headers(upstream.headers)
        mount = request.get(MOUNT)
        if mount is not None and "Location" in out_headers:
            out_headers["Location"] = mounted_location(out_headers["Location"], *mount)
        if extra_headers:
            for k, v in extra_headers.items():
                out_headers[k] = v
        length = upstream.headers.get("Content-Length")
        stream = is_event_stream(upstream.headers)
        if request.method == "HEAD" and length is not None and length.isdigit():
            # No body, but the length a GET would have (what HEAD is for): said as it was.
            resp = web.StreamResponse(
                status=upstream.status, reason=upstream.reason or None, headers=out_headers
            )
            resp.content_length = int(length)
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if length is not None and length.isdigit() and int(length) <= SMALL_BODY and not stream:
            payload = await read()
            if tap is not None:
                tap(payload)
            return web.Response(
                status=upstream.status, reason=upstream.reason or None, body=payload, headers=out_headers
            )
        if stream:
            out_headers["X-Accel-Buffering"] = "no"
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason or None, headers=out_headers)
        if length is not None and length.isdigit():
            resp.content_length = int(length)
        await resp.prepare(request)
        started = request[STARTED_RESPONSE] = resp
        async for chunk in chunks():
            if tap is not None:
                tap(chunk)
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    except BaseException as exc:
        # Client gone (cancelled), upstream broke, or anything else: close the upstream
        # connection instead of returning it to the pool, so the upstream sees the
        # disconnect and stops generating.
        close()
        if (
            isinstance(exc, ConnectionError)
            and not isinstance(exc, UpstreamClosed)
            and (request.transport is None or request.transport.is_closing())
        ):
            # A write to the client failed: it left (its task's cancellation is on its way),
            # the upstream did not break.
            raise asyncio.CancelledError from exc
        if (
            started is not None
            and started is not response
            and getattr(started, "unsent", False)
            and started.content_type != "text/event-stream"
            and isinstance(exc, (UpstreamTimeout, *broken))
        ):
            # The fast front's answer sends its head with the first body bytes: none has
            # gone yet, so the failure is answered as one before the response (502/504),
            # not with an aborted connection. (An event stream says why in its last event.)
            request[STARTED_RESPONSE] = None
            request.answered = None
            started = None
        if isinstance(exc, UpstreamTimeout):
            message = _timeout_message(exc)
            if started is None:
                raise UpstreamTimedOut(message) from exc
            await _last_event(request, started, 504, f"upstream timeout: {message}")
            raise UpstreamBroke(f"upstream timeout: {message}", started) from exc
        if isinstance(exc, broken):
            message = f"{type(exc).__name__}: {exc}"
            if started is None:
                raise UpstreamError(message) from exc
            # An event stream says why it ends (an SSE client such as the openai SDK raises
            # this message instead of a bare connection error); the abort still follows.
            await _last_event(request, started, 502, f"upstream failed mid-stream: {message}")
            raise UpstreamBroke(message, started) from exc
        raise


async def _last_event(request: web.Request, started: web.StreamResponse, status: int, message: str) -> None:
    """Write one last SSE error event into a started event stream, if the client is still there."""
    if (
        is_event_stream(started.headers)
        and request.transport is not None
        and not request.transport.is_closing()
    ):
        try:
            await started.write(sse_error(status, message))
        except (ConnectionError, RuntimeError):
            pass


def error_response(
    request: web.Request,
    status: int,
    message: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """llama-swap's error envelope; plain text when the client asks for text/plain, and a
    small HTML page when it asks for text/html (a browser), as llama-swap answers them. A
    client that also accepts JSON gets JSON."""
    accept = request.headers.get("Accept", "")
    hdrs = dict(headers or {})
    if "application/json" not in accept:
        if "text/plain" in accept:
            return web.Response(status=status, text=f"llama-swap: {message}", headers=hdrs)
        if "text/html" in accept:
            hdrs.pop("Content-Type", None)
            page = _html_error(status, message)
            return web.Response(status=status, text=page, content_type="text/html", headers=hdrs)
    hdrs["Content-Type"] = "application/json"
    return web.Response(status=status, body=envelope_bytes(status, message, code), headers=hdrs)


def _html_error(status: int, message: str) -> str:
    import html  # the error path of a browser only

    text = html.escape(message)
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>llama-swap: {status}</title></head>'
        f"<body><h1>llama-swap</h1><p>{status}: {text}</p></body></html>\n"
    )
