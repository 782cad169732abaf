"""An unload, or a shutdown whose drain ran out, stops a model with requests still in flight
(llama-swap stops it too). Each of those clients is told why its answer stops, end to end over
a real `llamaswap serve`, real fake-upstream processes and real sockets: a stream ends with an
SSE error event naming the unload (not a bare "upstream failed mid-stream"), a response that
sent nothing yet gets 503 + Retry-After, a WebSocket a 1001 close; the next request starts
the model again, and other models keep their streams."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
from serve_support import ServeFactory, free_port_block, model, upstream_cmd
from support.upstream import pid_alive, run_async

pytestmark = pytest.mark.e2e

ENDLESS = {"stream": True, "stall_after": 3}  # three chunks, then nothing until the client goes
UNLOADED = "a was unloaded while the request was running"


def two_models(serve: ServeFactory):
    models = {m: model(upstream_cmd(m)) for m in ("a", "b")}
    server = serve(
        {
            "startPort": free_port_block(2),
            "healthCheckTimeout": 30,
            "models": models,
            "groups": {"all": {"swap": False, "exclusive": False, "members": ["a", "b"]}},
        }
    )
    for m in ("a", "b"):
        assert server.chat(m).status == 200
    return server


@pytest.mark.parametrize("how", ["POST /api/models/unload/a", "GET /unload"])
def test_an_unload_tells_each_request_in_flight_why_it_ends(serve: ServeFactory, how: str):
    server = two_models(serve)
    pid_a = server.running()["a"]["pid"]
    stream = server.chat_call("a", **ENDLESS)
    events = stream.events()
    assert json.loads(next(events))["choices"][0]["delta"]["content"]
    slow = server.chat_call("a", tokens=2000, token_delay=0.05)  # not streamed: 100 s to its head
    server.wait(lambda: server.scheduler()["models"]["a"]["in_flight"] == 2, "both requests on a")
    other = None
    if how == "POST /api/models/unload/a":  # b is not unloaded: its stream goes on
        other = server.chat_call("b", stream=True, tokens=100, token_delay=0.02)
        other_events = other.events()
        next(other_events)

    method, path = how.split()
    resp = server.request(method, path)
    assert resp.status == 200, resp

    rest = list(events)  # until the server ends the stream
    assert rest and "[DONE]" not in rest, rest
    error = json.loads(rest[-1])["error"]
    assert UNLOADED in error["message"], error
    assert "mid-stream" not in error["message"]

    cut = slow.response()
    assert cut.status == 503 and cut.headers["Retry-After"] == "1"
    assert UNLOADED in json.loads(cut.read())["error"]["message"]
    slow.disconnect()
    stream.disconnect()

    server.wait(lambda: not pid_alive(pid_a), "a's process to stop")
    assert "unload: ending 2 request(s) in flight on a" in server.log()
    if other is not None:
        rest_b = list(other_events)
        assert rest_b[-1] == "[DONE]" and len(rest_b) >= 99, rest_b[-3:]
        other.disconnect()
    again = server.chat("a")  # the next request starts a again
    assert again.status == 200 and int(again.headers["X-Upstream-Pid"]) != pid_a


def test_an_unload_closes_an_open_websocket_with_1001(serve: ServeFactory):
    server = two_models(serve)

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(server.url + "/upstream/a/ws")
            assert (await ws.receive_json())["hello"].startswith("a:")
            resp = await asyncio.to_thread(server.post, "/api/models/unload/a")
            assert resp.status == 200, resp
            msg = await ws.receive(timeout=30)
            assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "model unloaded"), msg

    run_async(go(), timeout=60)
    assert server.chat("a").status == 200


def test_a_stream_still_running_when_the_shutdown_drain_ends_is_told_so(serve: ServeFactory):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "llamaswap": {"shutdownTimeout": 1},
            "models": {"a": model(upstream_cmd("a"))},
        }
    )
    stream = server.chat_call("a", **ENDLESS)
    events = stream.events()
    next(events)
    began = time.monotonic()
    server.send(signal.SIGTERM)
    rest = list(events)
    assert time.monotonic() - began >= 0.9  # the drain ran first
    assert rest and "[DONE]" not in rest, rest
    message = json.loads(rest[-1])["error"]["message"]
    assert "is shutting down: a was stopped while the request was still running" in message, message
    assert server.terminate(None) == 0
    assert "shutdown: ending 1 request(s) still in flight on a" in server.log()
