"""WebSockets through `/upstream/<model>/…`, end to end on one server: the upgrade loads the
model, frames flow both ways, either side's close reaches the other; an open websocket is in
flight (no eviction under it, cancellable); `compat.ignoreWebsockets` skips the scheduler
(409 while not ready); auth applies; shutdown closes open websockets with 1001.

The client is aiohttp's, over real sockets; the upstream is the fake upstream's /ws echo."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from serve_support import Serve, ServeFactory, model, upstream_cmd
from support.upstream import http, run_async

pytestmark = pytest.mark.e2e

KEY = "ws-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    factory = ServeFactory(tmp_path_factory.mktemp("websocket"))
    server = factory(
        {
            "healthCheckTimeout": 30,
            "apiKeys": [KEY],
            "models": {
                "a": model(upstream_cmd("a")),
                "b": model(upstream_cmd("b"), compat={"ignoreWebsockets": True}),
                "c": model(upstream_cmd("c")),
            },
            # c evicts a; b runs with either.
            "matrix": {"sets": {"ab": "a & b", "cb": "c & b"}},
        }
    )
    server.headers = dict(AUTH)
    try:
        yield server
    finally:
        factory.finish()


def ws_url(server: Serve, path: str) -> str:
    return server.url + path


async def connect(
    session: aiohttp.ClientSession, server: Serve, path: str, **kw
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(ws_url(server, path), headers=kw.pop("headers", AUTH), **kw)


async def poll(predicate, message: str, timeout: float = 30.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        assert loop.time() < deadline, f"timed out waiting for {message}"
        await asyncio.sleep(0.05)


def sched(server: Serve, model_id: str) -> dict:
    return server.scheduler()["models"][model_id]


def upstream_inflight(server: Serve, model_id: str) -> int:
    return http("GET", server.upstream_url(model_id) + "/debug/inflight").json()["inflight"]


def test_auth_applies_to_the_upgrade(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await connect(s, server, "/upstream/a/ws", headers={})
            return refused.value.status

    assert run_async(go()) == 401
    assert server.state("a") == "stopped"


def test_the_upgrade_loads_the_model_and_frames_flow_both_ways(server):
    assert server.state("a") == "stopped"

    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "/upstream/a/ws/room?x=1", protocols=("nope", "chat"))
            hello = await ws.receive_json()
            assert ws.protocol == "chat"
            assert (hello["path"], hello["protocol"]) == ("/ws/room", "chat")
            assert hello["hello"].startswith("a:")
            await ws.send_str("hi")
            assert await ws.receive_str() == "hi"
            await ws.send_bytes(b"\x00\x01\xff")
            assert await ws.receive_bytes() == b"\x00\x01\xff"
            # Open: in flight for the scheduler, listed in the in-flight table.
            snap = await asyncio.to_thread(sched, server, "a")
            assert (snap["state"], snap["in_flight"]) == ("ready", 1)
            listed = (await asyncio.to_thread(server.get, "/api/inflight")).json()["requests"]
            assert [(r["req_path"], r["state"]) for r in listed] == [("/upstream/a/ws/room", "serving")]
            await ws.close(code=1000, message=b"done")
            await poll(lambda: upstream_inflight(server, "a") == 0, "the upstream websocket to close")
            await poll(lambda: sched(server, "a")["in_flight"] == 0, "the ticket to be released")

    run_async(go(), timeout=60)


def test_the_upstreams_close_reaches_the_client(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "/upstream/a/ws")
            await ws.receive_json()
            await ws.send_str("close:4001:bye")
            msg = await ws.receive()
            assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "bye")
            await poll(lambda: sched(server, "a")["in_flight"] == 0, "the ticket to be released")

    run_async(go(), timeout=60)


def test_a_websocket_can_be_cancelled_from_the_inflight_table(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "/upstream/a/ws")
            await ws.receive_json()
            listed = (await asyncio.to_thread(server.get, "/api/inflight")).json()["requests"]
            (entry,) = [r for r in listed if r["model"] == "a"]
            resp = await asyncio.to_thread(server.post, f"/api/inflight/{entry['id']}/cancel")
            assert resp.status == 200
            msg = await ws.receive()
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1001)
            await poll(lambda: sched(server, "a")["in_flight"] == 0, "the ticket to be released")
            await poll(lambda: upstream_inflight(server, "a") == 0, "the upstream websocket to close")

    run_async(go(), timeout=60)


def test_a_client_that_drops_its_connection_closes_the_upstream(server):
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /upstream/a/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {KEY}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        server.wait(lambda: upstream_inflight(server, "a") == 1, "the upstream websocket to open")
    # Gone without a close frame: the upstream's websocket is closed, the ticket released.
    server.wait(lambda: upstream_inflight(server, "a") == 0, "the upstream websocket to close")
    server.wait(lambda: sched(server, "a")["in_flight"] == 0, "the ticket to be released")


def test_an_open_websocket_holds_its_model(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "/upstream/a/ws")
            await ws.receive_json()
            # c must evict a: it waits while a's websocket is open, and the frames still flow.
            call = await asyncio.to_thread(server.chat_call, "c")
            await asyncio.to_thread(server.wait_queued, "c")
            await ws.send_str("still here")
            assert await ws.receive_str() == "still here"
            assert (await asyncio.to_thread(server.state, "a")) == "ready"
            await ws.close()
            resp = await asyncio.to_thread(call.response)
            body = await asyncio.to_thread(resp.read)
            call.disconnect()
            assert resp.status == 200, body
            assert (await asyncio.to_thread(server.state, "a")) == "stopped"

    run_async(go(), timeout=60)


def test_ignored_websockets_skip_the_scheduler(server):
    assert server.state("b") == "stopped"

    async def go():
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await connect(s, server, "/upstream/b/ws")
            assert refused.value.status == 409
            assert (await asyncio.to_thread(server.state, "b")) == "stopped"
            assert (await asyncio.to_thread(server.get, "/upstream/b/v1/models")).status == 200  # loads b
            ws = await connect(s, server, "/upstream/b/ws")
            assert (await ws.receive_json())["hello"].startswith("b:")
            await ws.send_str("x")
            assert await ws.receive_str() == "x"
            snap = await asyncio.to_thread(sched, server, "b")
            assert (snap["in_flight"], snap["reserved"]) == (0, 0)
            listed = (await asyncio.to_thread(server.get, "/api/inflight")).json()["requests"]
            assert listed == []
            await ws.close()

    run_async(go(), timeout=60)


def test_shutdown_closes_open_websockets_with_1001(server):
    """Last in this module: it stops the shared server."""

    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await connect(s, server, "/upstream/c/ws")  # c runs since the eviction test
            await ws.receive_json()
            server.send(signal.SIGTERM)
            msg = await ws.receive()
            return msg.type, msg.data

    assert run_async(go(), timeout=60) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert server.terminate(sig=None) == 0
