"""Faults a new user runs into, found by trying `llamaswap serve` with real clients and real
processes (probe 4): an upstream that leaves its process group, and a client library's model
lookup."""

from __future__ import annotations

from serve_support import model, shell_cmd, upstream_cmd
from support.upstream import pid_alive


def test_an_upstream_that_left_its_process_group_is_killed_when_its_model_stops(serve):
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
