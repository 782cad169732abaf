"""The floor: the smallest aiohttp + uvloop reverse proxy, run by bench/proxy.py beside llamaswap.

It reads the body, POSTs it to the upstream on one shared ClientSession and returns the
upstream's body: what any proxy built on aiohttp pays per request, with nothing of llamaswap's
(no routing, no scheduler, no header filtering). The gap between it and llamaswap is
llamaswap's own cost; the gap between it and nginx is the framework's.

With `--client stream` it relays the upstream's answer as it arrives (aiohttp's StreamResponse,
chunk by chunk): the floor of an aiohttp proxy for streamed answers. With `--client relay` it is no
HTTP proxy at all but a TCP byte relay on uvloop (each client connection gets its own upstream
connection, bytes copied both ways as they come): the floor of any userspace proxy in Python,
two extra loopback hops and nothing else.

With `--client raw` the upstream leg uses a minimal keep-alive HTTP/1.1 client written on an
asyncio Protocol (fixed-length bodies only) instead of aiohttp's ClientSession: it measures what
a leaner upstream client would save (see bench/README.md).

Usage: python bench/floor_proxy.py PORT UPSTREAM_BASE_URL [--client aiohttp|raw|stream|relay]
(prints "listening" when ready)
"""

from __future__ import annotations

import asyncio
import socket
import sys
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web


class _RawConn(asyncio.Protocol):
    """One keep-alive connection; one request at a time; Content-Length bodies only."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buf[:end]).split(b"\r\n")
        length, ctype = 0, "application/octet-stream"
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"content-type":
                ctype = value.strip().decode("latin-1")
        if len(self.buf) - end - 4 < length:
            return
        body = bytes(self.buf[end + 4 : end + 4 + length])
        del self.buf[: end + 4 + length]
        self.waiter.set_result((int(head[0].split()[1]), ctype, body))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("upstream closed"))


class RawPool:
    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port or 80
        self.idle: list[_RawConn] = []

    async def post(self, path: str, body: bytes, ctype: str) -> tuple[int, str, bytes]:
        loop = asyncio.get_running_loop()
        conn = None
        while self.idle and conn is None:
            c = self.idle.pop()
            conn = None if c.closed else c
        if conn is None:
            _, conn = await loop.create_connection(_RawConn, self.host, self.port)
        conn.waiter = loop.create_future()
        conn.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.port, ctype.encode(), len(body), body)
        )
        result = await conn.waiter
        self.idle.append(conn)
        return result


class _Relay(asyncio.Protocol):
    """One side of a byte relay: what it receives goes to its peer's transport as it comes."""

    def __init__(self, upstream: tuple[str, int] | None, peer: _Relay | None = None) -> None:
        self.upstream = upstream  # None on the upstream side
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.upstream is not None:
            asyncio.get_running_loop().create_task(self._connect(*self.upstream))

    async def _connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, peer = await loop.create_connection(lambda: _Relay(None, self), host, port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.peer = peer
        for data in self.pending:
            peer.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(port: int, upstream: str, client: str) -> None:
    if client == "relay":
        target = urlsplit(upstream)
        where = (target.hostname or "127.0.0.1", target.port or 80)
        server = await asyncio.get_running_loop().create_server(lambda: _Relay(where), "127.0.0.1", port)
        print("listening", flush=True)
        async with server:
            await server.serve_forever()
    session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
    raw = RawPool(upstream)

    async def handle_raw(request: web.Request) -> web.Response:
        status, ctype, payload = await raw.post(request.path, await request.read(), request.content_type)
        return web.Response(status=status, body=payload, headers={"Content-Type": ctype})

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        async with session.post(
            upstream + request.path, data=body, headers={"Content-Type": request.content_type}
        ) as up:
            payload = await up.read()
            return web.Response(status=up.status, body=payload, content_type=up.content_type)

    async def handle_stream(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(
            upstream + request.path, data=body, headers={"Content-Type": request.content_type}
        ) as up:
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": up.headers["Content-Type"]})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    handlers = {"raw": handle_raw, "stream": handle_stream}
    app.router.add_post("/{tail:.*}", handlers.get(client, handle))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        client = sys.argv[sys.argv.index("--client") + 1] if "--client" in sys.argv else "aiohttp"
        runner.run(main(int(sys.argv[1]), sys.argv[2].rstrip("/"), client))
