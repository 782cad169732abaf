"""The bounded drain of a hot reload, end to end: a real `llamaswap serve`, real fake-upstream
processes, real sockets. A model the reload restarts keeps serving what is in flight for
`llamaswap.reloadDrainTimeout` seconds; then a stream still open gets an SSE error event and
ends, a WebSocket gets a 1012 close, the old process stops, and the requests that queued
meanwhile are served by the new process (long before the queue timeout). What ends inside
the grace period keeps its whole answer; other models are not touched."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from serve_support import Serve, ServeFactory, free_port_block, model, upstream_cmd
from support.upstream import pid_alive, run_async

pytestmark = pytest.mark.e2e

GRACE = 1.5  # seconds of drain in these tests
ENDLESS = {"stream": True, "stall_after": 3}  # three chunks, then nothing until the client goes
QUEUE_TIMEOUT = 600  # the default: a request that waited it out would fail these tests' deadlines


def config(models: dict, start_port: int, grace: float = GRACE) -> dict:
    return {
        "startPort": start_port,
        "healthCheckTimeout": 30,
        "llamaswap": {"reloadDrainTimeout": grace},
        "models": models,
        "groups": {"all": {"swap": False, "exclusive": False, "members": sorted(models)}},
    }


def write(path: Path, cfg: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)


def ready_pid(server: Serve, model_id: str) -> int | None:
    entry = server.running().get(model_id, {})
    return entry.get("pid") if entry.get("state") == "ready" else None


def reload(server: Serve) -> dict:
    resp = server.post("/api/config/reload")
    assert resp.status == 200, resp
    record = resp.json()
    assert record["ok"], record
    return record


def serve_two(serve: ServeFactory, tmp_path: Path, grace: float = GRACE) -> tuple[Serve, dict, int, Path]:
    port = free_port_block(2)
    models = {m: model(upstream_cmd(m)) for m in ("a", "b")}
    server = serve(config(models, port, grace))
    for m in ("a", "b"):
        assert server.chat(m).status == 200
    return server, models, port, tmp_path / "config.yaml"


def change_a(models: dict, path: Path, port: int, grace: float = GRACE) -> None:
    models["a"] = model(upstream_cmd("a", token_delay=0.001))  # a new cmd: a restarts
    write(path, config(models, port, grace))


def test_a_stream_open_across_a_reload_is_ended_at_the_deadline_and_the_new_process_serves(
    serve: ServeFactory, tmp_path: Path
):
    server, models, port, path = serve_two(serve, tmp_path)
    old_a, pid_b = ready_pid(server, "a"), ready_pid(server, "b")
    endless = server.chat_call("a", **ENDLESS)
    events = endless.events()
    assert json.loads(next(events))["choices"][0]["delta"]["content"]
    slow = server.chat_call("a", tokens=2000, token_delay=0.05)  # not streamed: 100 s to its head
    server.wait(lambda: server.scheduler()["models"]["a"]["in_flight"] == 2, "the slow request to be served")
    other = server.chat_call("b", stream=True, tokens=200, token_delay=0.02)  # about 4 s on b
    other_events = other.events()
    next(other_events)

    change_a(models, path, port)
    reloaded = time.monotonic()
    assert reload(server)["changes"]["restarted"] == ["a"]
    state = server.scheduler()
    assert state["retiring"] == {"a": "restart"}
    assert 0 < state["draining"]["a"]["deadline_in_s"] <= GRACE
    assert state["draining"]["a"]["in_flight"] == 2
    assert "a" in server.get("/api/reloads").json()["draining"]
    # A new request for a queues behind the drain (sent now, answered later).
    queued = server.chat_call("a", content="after the reload")
    server.wait(lambda: server.scheduler()["queue"], "the new request for a to queue")

    rest = list(events)  # until the server ends the stream
    ended = time.monotonic() - reloaded
    assert rest, "the stream ended without an error event"
    error = json.loads(rest[-1])["error"]
    assert "restarts for a config reload" in error["message"] and "reloadDrainTimeout" in error["message"]
    assert "[DONE]" not in rest
    assert GRACE - 0.2 <= ended < GRACE + 10, ended  # not before the deadline; soon after it

    # The plain response had sent nothing yet: a 503 the client may retry at once.
    cut = slow.response()
    assert cut.status == 503 and cut.headers["Retry-After"] == "1"
    assert "restarts for a config reload" in json.loads(cut.read())["error"]["message"]
    slow.disconnect()

    resp = queued.response()
    answered = time.monotonic() - reloaded
    body = json.loads(resp.read())
    assert resp.status == 200, body
    assert body["choices"][0]["message"]["content"]
    assert answered < 30 < QUEUE_TIMEOUT, answered  # served by the new process, not timed out
    new_a = int(resp.headers["X-Upstream-Pid"])
    assert new_a != old_a and not pid_alive(old_a)
    queued.disconnect()
    endless.disconnect()

    # b, unchanged, kept its stream and its process.
    rest_b = list(other_events)
    assert rest_b[-1] == "[DONE]" and len(rest_b) >= 199
    other.disconnect()
    assert ready_pid(server, "b") == pid_b
    log = server.log()
    assert "reload: a still has 2 request(s) in flight 1.5s after the reload" in log
    assert "restarts for a config reload" in log
    state = server.scheduler()
    assert state["retiring"] == {} and state["draining"] == {}


def test_a_stream_that_ends_within_the_drain_keeps_its_whole_answer(serve: ServeFactory, tmp_path: Path):
    server, models, port, path = serve_two(serve, tmp_path, grace=20)
    old_a = ready_pid(server, "a")
    call = server.chat_call("a", stream=True, tokens=60, token_delay=0.02)  # about 1.2 s
    events = call.events()
    next(events)
    change_a(models, path, port, grace=20)
    reload(server)
    rest = list(events)
    assert rest[-1] == "[DONE]" and len(rest) >= 59, rest[-3:]
    assert not any("error" in json.loads(e) for e in rest[:-1])
    call.disconnect()
    # The drain ended with the stream, not at the deadline: a restarts now.
    server.wait(lambda: ready_pid(server, "a") not in (None, old_a), "a to run its new cmd", timeout=15)
    assert "request(s) in flight" not in server.log()


def test_an_open_websocket_is_closed_with_1012_at_the_deadline(serve: ServeFactory, tmp_path: Path):
    server, models, port, path = serve_two(serve, tmp_path)
    old_a = ready_pid(server, "a")

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(server.url + "/upstream/a/ws")
            assert (await ws.receive_json())["hello"].startswith("a:")
            await asyncio.to_thread(change_a, models, path, port)
            reloaded = time.monotonic()
            await asyncio.to_thread(reload, server)
            await ws.send_str("still here")
            assert await ws.receive_str() == "still here"  # open during the grace period
            msg = await ws.receive(timeout=GRACE + 10)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012), msg
            assert "reload" in msg.extra
            assert time.monotonic() - reloaded >= GRACE - 0.2

    run_async(go(), timeout=60)
    server.wait(lambda: ready_pid(server, "a") not in (None, old_a), "a to run its new cmd")
    assert not pid_alive(old_a)
    assert server.chat("a").status == 200


def test_a_failed_reload_or_another_models_drain_never_ends_a_request(serve: ServeFactory, tmp_path: Path):
    """A reload that fails sets no drain; a reload drains only the model it restarts: b's
    endless stream outlives a's drain."""
    server, models, port, path = serve_two(serve, tmp_path, grace=0.5)
    old_a = ready_pid(server, "a")
    on_b = server.chat_call("b", **ENDLESS)
    events = on_b.events()
    next(events)
    good = path.read_text()
    path.write_text(good.replace("reloadDrainTimeout: 0.5", "reloadDrainTimeout: -1"))
    failed = server.post("/api/config/reload")
    assert failed.status == 422 and "reloadDrainTimeout" in failed.json()["diagnostics_text"]
    state = server.scheduler()
    assert state["retiring"] == {} and state["draining"] == {}
    change_a(models, path, port, grace=0.5)
    reload(server)
    server.wait(lambda: ready_pid(server, "a") not in (None, old_a), "a to restart")
    assert server.scheduler()["models"]["b"]["in_flight"] == 1
    on_b.disconnect()
    server.wait(lambda: server.scheduler()["models"]["b"]["in_flight"] == 0, "b's stream to end")
    assert "request(s) in flight" not in server.log()
