"""The upstream client's response heads: one that never ends (a wrong port, a broken server)
costs the proxy a bounded amount of memory (the request fails once the head passes
MAX_HEAD and the connection is dropped), a long but finite head still goes through, and
interim 1xx responses are skipped for the final one."""

from __future__ import annotations

import asyncio

import pytest

from llamaswap.runtime.upstream import MAX_HEAD, UpstreamClient, UpstreamClosed, UpstreamResponse, _Conn


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def serve_once(reply):
    """A server that reads one request head and hands its writer to `reply`."""
    sent = {"bytes": 0, "closed": asyncio.Event()}

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        try:
            await reply(writer, sent)
        except ConnectionError:
            pass
        finally:
            sent["closed"].set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], sent


def test_an_endless_response_head_fails_the_request_and_drops_the_connection():
    async def endless(writer, sent):
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        while True:  # until the client hangs up
            writer.write(b"a" * 65536)
            sent["bytes"] += 65536
            await writer.drain()

    async def scenario():
        server, port, sent = await serve_once(endless)
        client = UpstreamClient(connect_timeout=5)
        with pytest.raises(UpstreamClosed) as caught:
            await client.pool("127.0.0.1", port).request("GET", "/v1/models", [], None)
        # The client hung up: the server's writes fail instead of going on for ever.
        await asyncio.wait_for(sent["closed"].wait(), 10)
        client.close()
        server.close()
        await server.wait_closed()
        return str(caught.value), sent["bytes"]

    message, sent_bytes = run(scenario())
    assert "head longer than 1024 KiB" in message
    # Past the limit only what the sockets' buffers held in flight was sent.
    assert MAX_HEAD < sent_bytes < 64 * MAX_HEAD


def test_a_long_but_finite_head_and_a_1xx_before_it_are_read_whole():
    long_value = b"v" * (MAX_HEAD // 2)

    async def long_head(writer, sent):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: " + long_value + b"\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def scenario():
        server, port, _ = await serve_once(long_head)
        client = UpstreamClient(connect_timeout=5)
        resp = await client.pool("127.0.0.1", port).request("GET", "/v1/models", [], None)
        body = await resp.read()
        client.close()
        server.close()
        await server.wait_closed()
        return resp.status, resp.headers["X-Long"].encode(), body

    status, value, body = run(scenario())
    assert (status, body) == (200, b"ok")
    assert value == long_value


def test_interim_responses_arriving_on_their_own_are_skipped():
    """100 Continue and 103 Early Hints, each in its own read: the response is the final
    one (its status, headers and body), not the first head that arrived."""

    async def scenario():
        client = UpstreamClient(connect_timeout=5)
        conn = _Conn(client.pool("127.0.0.1", 9))  # fed by hand: no socket needed
        conn.head = asyncio.get_running_loop().create_future()
        conn.data_received(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.data_received(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        assert not conn.head.done()
        conn.data_received(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhel")
        assert conn.head.done()
        resp = UpstreamResponse(conn, "POST")
        assert not conn.complete
        conn.data_received(b"lo")
        body = await resp.read()
        client.close()
        return resp.status, resp.reason, [k for k, _ in resp.raw_headers], body

    status, reason, names, body = run(scenario())
    assert (status, reason, body) == (201, "Created", b"hello")
    assert names == [b"Content-Length", b"X-Final"]
