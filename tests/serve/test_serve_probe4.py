"""Faults a new user runs into, found by trying `llamaswap serve` with real clients and real
processes (probe 4): an upstream that leaves its process group, and the openai SDK's model
retrieve."""

from __future__ import annotations

import openai
import pytest
from serve_support import API_KEY, model, shell_cmd, upstream_cmd
from support.upstream import http as http_request
from support.upstream import pid_alive


def test_an_upstream_that_left_its_process_group_is_stopped_with_its_model(serve):
    # The wrapper starts the real server with setsid, as a daemonizing launcher does: the
    # server is then in a session and process group of its own, which a stop of the model's
    # group does not reach. It still holds the model's output pipe, so it is the model's.
    escaped = shell_cmd(f"setsid {upstream_cmd('escaper')} & sleep 1000")
    server = serve(
        {"healthCheckTimeout": 30, "models": {"escaper": model(escaped), "other": model(upstream_cmd("o"))}}
    )
    first = server.chat("escaper")
    assert first.status == 200, first
    pid = int(first.headers["X-Upstream-Pid"])
    server.extra_pids.add(pid)
    assert server.get("/unload").status == 200
    server.wait(lambda: not pid_alive(pid), f"the escaped upstream (pid {pid}) to be gone")
    assert f"pid {pid} (" in server.log() and "left process group" in server.log()
    # It was asked first (SIGTERM: the fake upstream says so on its way out), as any stop asks.
    assert "[escaper] escaper: shutting down" in server.get("/logs").body.decode()
    # Its port is free again: the model starts anew instead of failing with "port in use".
    again = server.chat("escaper")
    assert again.status == 200, again
    second = int(again.headers["X-Upstream-Pid"])
    assert second != pid
    server.extra_pids.add(second)
    # A swap stops it too, and so does llamaswap's own exit (the teardown checks `extra_pids`).
    assert server.chat("other").status == 200
    server.wait(lambda: not pid_alive(second), f"the escaped upstream (pid {second}) to be gone")
    third = server.chat("escaper")
    assert third.status == 200, third
    server.extra_pids.add(int(third.headers["X-Upstream-Pid"]))


def test_the_openai_sdk_retrieves_one_model_as_the_list_shows_it(api_server):
    with openai.OpenAI(
        base_url=api_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30.0
    ) as client:
        listed = {m.id: m for m in client.models.list().data}
        chat = client.models.retrieve("chat")
        assert chat == listed["chat"] and chat.name == "Chat"
        assert client.models.retrieve("chat-alias") == listed["chat"]  # an alias: its model's record
        assert client.models.retrieve("org/model").id == "org/model"
        for name in ("nope", "hidden"):  # unknown, and unlisted: not in the list, not found here
            with pytest.raises(openai.NotFoundError) as err:
                client.models.retrieve(name)
            assert err.value.body == {
                "message": f"model not found: {name}",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
    unauthorized = api_server.request("GET", "/v1/models/chat", headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status == 401


def test_a_client_that_leaves_a_fast_stream_is_not_called_an_upstream_failure(serve):
    # A client that stops reading and closes mid-stream (a chat UI's stop button) while the
    # upstream sends as fast as it can: the write to the closing client connection failed in
    # about one disconnect in three, and was logged as "upstream failed mid-response".
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    assert server.chat("m").status == 200
    leaves = 20
    for _ in range(leaves):
        call = server.chat_call("m", stream=True, tokens=200_000, token_delay=0)
        events = call.events()
        for _ in range(50):
            next(events)
        call.disconnect()
    upstream = server.upstream_url("m")

    def settled() -> bool:
        # Every stream ended (the upstream saw each disconnect) and its access line is written.
        inflight = http_get(upstream + "/debug/inflight").json()
        return inflight["inflight"] == 0 and server.log().count("POST /v1/chat/completions m ") >= leaves + 1

    server.wait(settled, "every stream to end")
    assert "mid-response" not in server.log(), server.log()
    assert server.chat("m").status == 200


def http_get(url: str):
    return http_request("GET", url)
