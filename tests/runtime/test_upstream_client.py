"""The proxy's upstream client (`llamaswap/runtime/upstream.py`) against real sockets on
127.0.0.1: small asyncio servers that answer with exactly the bytes each case needs."""

from __future__ import annotations

import asyncio

import pytest

from llamaswap.runtime.upstream import UpstreamClient, UpstreamClosed, UpstreamConnectError, UpstreamTimeout

OK_BODY = b'{"ok":true}'


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Server:
    """Answers each request on a connection with the next scripted reply. A reply is bytes,
    or a callable(writer) coroutine for replies that must be paced by the test."""

    def __init__(self, replies_per_connection):
        self.replies = replies_per_connection
        self.connections = 0
        self.requests: list[bytes] = []
        self.eof = asyncio.Event()
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        index = self.connections
        self.connections += 1
        replies = list(self.replies[min(index, len(self.replies) - 1)])
        try:
            while replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                reply = replies.pop(0)
                if callable(reply):
                    await reply(writer)
                else:
                    writer.write(reply)
                    await writer.drain()
            data = await reader.read()  # wait for the client to go away
            if not data:
                self.eof.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
        finally:
            writer.close()


def fixed(body: bytes = OK_BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def post(client: UpstreamClient, port: int, body: bytes = b'{"model":"m"}'):
    resp = await client.pool("127.0.0.1", port).request(
        "POST", "/v1/chat/completions", [("Content-Type", "application/json")], body
    )
    return resp, await resp.read()


def test_fixed_length_responses_reuse_one_connection():
    async def scenario():
        async with Server([[fixed(), fixed(b"second")]]) as srv:
            client = UpstreamClient()
            r1, b1 = await post(client, srv.port)
            r2, b2 = await post(client, srv.port, b"x" * 3)
            client.close()
            return srv, (r1.status, r1.headers["Content-Type"], b1), b2

    srv, first, second = run(scenario())
    assert first == (200, "application/json", OK_BODY)
    assert second == b"second"
    assert srv.connections == 1
    assert srv.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert srv.requests[0].endswith(b'Content-Length: 13\r\n\r\n{"model":"m"}')


def test_chunks_are_handed_over_as_they_arrive():
    async def scenario():
        release = asyncio.Event()

        async def paced(writer):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            writer.write(b"6\r\ndata:1\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")
            await writer.drain()

        async with Server([[paced]]) as srv:
            client = UpstreamClient()
            resp = await client.pool("127.0.0.1", srv.port).request("POST", "/s", [], b"{}")
            got = []
            async for chunk in resp.iter_chunks():
                got.append(chunk)
                release.set()  # the second chunk is only sent once the first was received
            idle = len(client.pool("127.0.0.1", srv.port)._idle)
            client.close()
            return resp.headers["Content-Type"], got, idle

    ctype, chunks, idle = run(scenario())
    assert ctype == "text/event-stream"
    assert chunks == [b"data:1", b"data:2"]
    assert idle == 1  # complete and keep-alive: back in the pool


def test_a_body_without_length_ends_with_the_connection_and_is_not_reused():
    async def scenario():
        async def until_close(writer):
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
            await writer.drain()
            writer.close()

        async with Server([[until_close], [fixed()]]) as srv:
            client = UpstreamClient()
            _, b1 = await post(client, srv.port)
            _, b2 = await post(client, srv.port)
            client.close()
            return srv.connections, b1, b2

    connections, first, second = run(scenario())
    assert (first, second) == (b"all of it", OK_BODY)
    assert connections == 2


def test_a_stale_kept_alive_connection_is_retried_once_on_a_new_one():
    async def scenario():
        async def then_close(writer):
            writer.write(fixed())
            await writer.drain()
            writer.close()  # the upstream drops the idle keep-alive connection

        async with Server([[then_close], [fixed(b"fresh")]]) as srv:
            client = UpstreamClient()
            await post(client, srv.port)
            await asyncio.sleep(0)  # nothing waited on: the close may or may not be seen yet
            _, body = await post(client, srv.port)
            client.close()
            return srv.connections, body

    connections, body = run(scenario())
    assert body == b"fresh"
    assert connections == 2


def test_unreachable_upstream_and_broken_responses_raise_clear_errors():
    async def scenario():
        client = UpstreamClient(connect_timeout=5)
        # A port nothing listens on.
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        with pytest.raises(UpstreamConnectError):
            await post(client, port)

        async def truncated(writer):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            await writer.drain()
            writer.close()

        async with Server([[truncated], [b"NOT HTTP AT ALL\r\n\r\n"]]) as srv:
            with pytest.raises(UpstreamClosed):
                await post(client, srv.port)
            with pytest.raises(UpstreamClosed):
                await post(client, srv.port)
        client.close()

    run(scenario())


def test_bodyless_statuses_and_giving_up_mid_stream():
    async def scenario():
        async def endless(writer):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await writer.drain()

        async with Server([[b"HTTP/1.1 204 No Content\r\n\r\n", endless]]) as srv:
            client = UpstreamClient()
            resp, body = await post(client, srv.port)
            assert (resp.status, body) == (204, b"")
            resp = await client.pool("127.0.0.1", srv.port).request("POST", "/", [], b"{}")
            async for chunk in resp.iter_chunks():
                assert chunk == b"hello"
                break  # the consumer walks away: the connection must close
            resp.close()
            await asyncio.wait_for(srv.eof.wait(), 5)
            left = len(client.pool("127.0.0.1", srv.port)._idle)
            client.close()
            return srv.connections, left

    connections, idle = run(scenario())
    assert connections == 1 and idle == 0


def test_bounded_waits_raise_upstream_timeout_and_the_connection_is_never_reused():
    async def scenario():
        release = asyncio.Event()

        async def no_head(writer):
            await release.wait()

        async def half_body(writer):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            await writer.drain()
            await release.wait()

        async with Server([[no_head], [half_body], [fixed()]]) as srv:
            client = UpstreamClient()
            pool = client.pool("127.0.0.1", srv.port)
            with pytest.raises(UpstreamTimeout) as late:
                await pool.request("POST", "/x", [], b"{}", header_timeout=0.2)
            assert late.value.phase == "header" and "within 0.2s" in str(late.value)
            resp = await pool.request("POST", "/x", [], b"{}", idle_timeout=0.2)
            with pytest.raises(UpstreamTimeout) as idle:
                await resp.read()
            assert idle.value.phase == "idle" and "no data for 0.2s" in str(idle.value)
            # Neither timed-out connection went back to the pool: this one is the third.
            resp, body = await post(client, srv.port)
            assert body == OK_BODY and srv.connections == 3
            release.set()
            client.close()

    run(scenario())
