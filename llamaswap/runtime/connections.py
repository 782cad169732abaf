"""Connections: bounds on the client connections of `llamaswap serve`, below the app.

- A cap on open connections (`server.maxConnections`): one more is answered
  `503 too many connections` with `Retry-After: 1` and closed, without being parsed.
- A request head must be complete within `server.headerTimeout` of its first byte (slow
  headers, "slowloris"): 408 and close. An idle kept-alive connection is closed after
  `server.keepaliveTimeout` (aiohttp's own keep-alive timer). Body reads are bounded in
  body.py (`server.bodyTimeout`).
- A malformed request is answered 400 as aiohttp does, and logged as one warning line
  (`bad HTTP request from ADDR: reason`), never a traceback.
- `raise_open_files_limit()` lifts the soft RLIMIT_NOFILE to the hard limit (as Go does for
  llama-swap), so the connection cap, not the descriptor limit, is what refuses clients.

aiohttp has no hook for the first two, so the runner's protocol factory is wrapped: each
connection gets a RequestHandler subclass (header timer, one-line errors) or, over the cap,
a tiny protocol that only refuses. The subclass relies on RequestHandler internals that are
pinned by the end-to-end tests (tests/serve/test_serve_request_safety.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from llamaswap.runtime.errors import envelope
from llamaswap.runtime.limits import ServerLimits

logger = logging.getLogger("llamaswap.serve")
_SILENT = logging.getLogger("llamaswap.serve.aiohttp-silenced")
_SILENT.disabled = True

# The longest request line (method, target, version) aiohttp's parser takes: as long as a
# whole head the fast front buffers before it hands a connection over (fastserver.MAX_HEAD),
# so a long query string is served, or refused, the same on both paths (aiohttp: 8190).
MAX_REQUEST_LINE = 1 << 16
REFUSE_LINGER = 2.0  # seconds a refused connection may take to read its answer
REFUSED_LOG_EVERY = 5.0  # at most one "too many connections" line per this many seconds


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


def _response(status: int, reason: str, message: str, extra: str = "") -> bytes:
    body = json.dumps(envelope(status, message), separators=(",", ":")).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


class _Refuse(asyncio.Protocol):
    """Answers 503 at once, closes its side, and lets the client read the answer."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # uvloop's are not asyncio.Transport
        cap = self.guard.limits.max_connections
        transport.write(
            _response(
                503,
                "Service Unavailable",
                f"too many connections (server.maxConnections = {cap}); try again later",
                "Retry-After: 1\r\n",
            )
        )
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSE_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # discarded: the answer does not depend on it

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class _Handler(RequestHandler):
    """aiohttp's RequestHandler with a header timeout and one-line logs for bad requests."""

    def __init__(self, *args: Any, header_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif (
            data
            and self._header_timeout is not None
            and self._header_timer is None
            and not self._request_in_progress
            and not self._messages
        ):
            # The first bytes of a request head: it must be complete in time.
            self._header_timer = self._loop.call_later(self._header_timeout, self._header_late, count)

    def _process_keepalive(self) -> None:
        if self._header_timer is not None:
            # A request head is arriving: the header timeout governs, not the idle timeout.
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _header_late(self, count: int) -> None:
        self._header_timer = None
        if self._request_count != count or self._request_in_progress or self.transport is None:
            return
        logger.warning(
            "request header timeout: %s sent no complete request head within %gs "
            "(server.headerTimeout); closing",
            self._peer(),
            self._header_timeout,
        )
        self.transport.write(
            _response(
                408,
                "Request Timeout",
                f"request header timeout ({self._header_timeout:g}s, server.headerTimeout)",
            )
        )
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "a client"

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = (getattr(exc, "message", "") or str(exc)).strip().splitlines()
        if isinstance(exc, LineTooLong):
            # aiohttp's text names neither what was too long nor the limit's reason, and
            # echoes the line back: say which limit it is.
            line = exc.args[1] == MAX_REQUEST_LINE
            status = 414 if line else 431
            message = (
                f"request target longer than {MAX_REQUEST_LINE} bytes"
                if line
                else f"request header field longer than {exc.args[1]} bytes"
            )
            reason = [message]
        logger.warning(
            "bad HTTP request from %s: %s", self._peer(), (reason[0] if reason else type(exc).__name__)[:200]
        )
        saved, self.logger = self.logger, _SILENT
        try:
            return super().handle_error(request, status, exc, message)
        finally:
            self.logger = saved


class ConnectionGuard:
    """Stands in for the runner's aiohttp Server: the sites call it for each new
    connection; everything else is the Server's."""

    def __init__(self, server: web.Server, limits: ServerLimits) -> None:
        self._server = server
        self.limits = limits
        self._refused = 0
        self._refused_logged = 0.0
        self.others: Callable[[], int] = lambda: 0  # connections the fast front holds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def __call__(self) -> asyncio.Protocol:
        refused = self.refusal()
        return refused if refused is not None else self.handler()

    def refusal(self) -> asyncio.Protocol | None:
        """The refusing protocol for one more connection over the cap (counting the fast
        front's connections, `others`, with aiohttp's), or None."""
        cap = self.limits.max_connections
        if cap is None:
            return None
        count = len(self._server._connections) + self.others()
        if count < cap:
            return None
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_EVERY:
            self._refused_logged = now
            logger.warning(
                "too many connections: %d open (server.maxConnections = %d); refused %d since the last report",
                count,
                cap,
                self._refused,
            )
            self._refused = 0
        return _Refuse(self)

    def handler(self) -> asyncio.Protocol:
        """aiohttp's protocol for one connection (bounded as described above)."""
        server = self._server
        return _Handler(
            server, loop=server._loop, header_timeout=self.limits.header_timeout, **server._kwargs
        )


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are bounded as described above."""

    def __init__(self, app: web.Application, limits: ServerLimits, **kwargs: Any) -> None:
        # 0 in the config turns the keep-alive timeout off; aiohttp has no "off".
        kwargs.setdefault(
            "keepalive_timeout", limits.keepalive_timeout if limits.keepalive_timeout is not None else 1e9
        )
        # Request bodies go upstream byte for byte, as llama-swap sends them: a decompressed
        # body would be forwarded under its `Content-Encoding` and its old `Content-Length`.
        kwargs.setdefault("auto_decompress", False)
        kwargs.setdefault("max_line_size", MAX_REQUEST_LINE)
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ConnectionGuard(server, self._limits)  # type: ignore[return-value]
