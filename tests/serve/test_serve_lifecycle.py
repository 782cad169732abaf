"""Start-up and shut-down, end to end: preload hooks, the loading-state stream, and eviction
and SIGTERM with requests waiting (503, exit 0, no process left behind, grandchildren
included)."""

from __future__ import annotations

import json
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serve_support import envelope, model, shell_cmd, upstream_cmd
from support.upstream import pid_alive

pytestmark = pytest.mark.e2e


def states(server) -> dict[str, str]:
    return {m: e["state"] for m, e in server.running().items()}


def grandchild_script(name: str, pidfile: Path) -> str:
    """Leaves a child behind that ignores SIGTERM (as a careless wrapper script would): only a
    SIGKILL to the process group gets rid of it."""
    return f"(trap '' TERM; exec sleep 300) & echo $! > {pidfile}; "


def test_eviction_and_sigterm_leave_no_process_and_answer_waiting_requests_503(serve, tmp_path):
    gate = serve.gate()
    k_pidfile, g_pidfile = tmp_path / "k.pid", tmp_path / "g.pid"
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "k": model(shell_cmd(grandchild_script("k", k_pidfile) + f"exec {upstream_cmd('k')}")),
                # g's wrapper starts its grandchild, then waits for the gate: it stays `starting`.
                "g": model(
                    shell_cmd(
                        grandchild_script("g", g_pidfile)
                        + f"while [ ! -e {gate.path} ]; do sleep 0.02; done; "
                        + f"exec {upstream_cmd('g')}"
                    )
                ),
                "c": model(upstream_cmd("c")),
            },
        }
    )  # no groups: one model at a time
    assert server.chat("k").status == 200
    k_child = int(k_pidfile.read_text())
    assert pid_alive(k_child)
    server.extra_pids.add(k_child)

    with ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(server.chat, "g")  # evicts k, then waits for g (gate closed)
        server.wait_state("g", "starting")
        # Evicting k killed its whole process group, the grandchild included.
        server.wait(lambda: not pid_alive(k_child), "the evicted model's grandchild to be gone")
        server.wait(lambda: g_pidfile.exists() and g_pidfile.read_text().strip(), "g's grandchild")
        g_child = int(g_pidfile.read_text())
        server.extra_pids.add(g_child)
        queued = pool.submit(server.chat, "c")  # collides with g's swap: queued
        server.wait_queued("c")
        logs = server.call("GET", "/logs/stream")  # a live log tail, open during shutdown
        assert logs.response().status == 200
        # terminate() checks exit code 0 and that every process seen, and every descendant
        # of llamaswap alive before the signal (g's grandchild too), is gone.
        assert server.terminate(signal.SIGTERM) == 0
        answers = [waiting.result(), queued.result()]
    # The log tail was ended cleanly (not cut off), and saw the shutdown happen.
    tail = logs.response().read().decode()
    assert "SIGTERM: shutting down" in tail
    for resp in answers:
        assert resp.status == 503
        assert resp.json() == envelope("group is shutting down", "server_error", "service_unavailable")
    assert not pid_alive(g_child)
    assert "SIGTERM: shutting down" in server.log()


def test_preload_loads_coexisting_models_in_parallel_and_survives_a_failure(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "a": model(gate.wrap(upstream_cmd("a"))),
                "b": model(gate.wrap(upstream_cmd("b")), aliases=["bee"]),
                "bad": model(shell_cmd("echo 'cannot load weights' >&2; exit 7") + " ${PORT}"),
            },
            "matrix": {"sets": {"all": "a & b & bad"}},
            "hooks": {"on_startup": {"preload": ["a", "bee", "bad"]}},
        }
    )
    # Both start before either can be ready: they load in parallel.
    server.wait(lambda: states(server) == {"a": "starting", "b": "starting"}, "a and b starting")
    server.wait(lambda: "PRELOAD FAILED for bad" in server.log(), "the failed preload to be logged")
    assert re.search(
        r"(?m)^ERROR llamaswap\.serve: PRELOAD FAILED for bad: unspecific error: upstream "
        r"command exited prematurely \(exit code 7\): cannot load weights",
        server.log(),
    )
    gate.open()
    server.wait(lambda: states(server) == {"a": "ready", "b": "ready"}, "a and b ready")
    # Serving goes on, and the preloaded models answer without a swap.
    for name in ("a", "b"):
        resp = server.chat(name)
        assert resp.status == 200 and "X-Llamaswap-Swap" not in resp.headers
    assert server.scheduler()["swaps_started"] == 3


def test_loading_state_streams_progress_then_the_upstream_answer(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "sendLoadingState": True,
            "models": {
                "slow": model(gate.wrap(upstream_cmd("slow"))),
                "next": model(upstream_cmd("next")),
                "quiet": model(upstream_cmd("quiet"), sendLoadingState=False),
            },
            "matrix": {"sets": {"s": "slow", "n": "next & quiet"}},
        }
    )

    def reasoning(payload: str) -> str | None:
        return json.loads(payload)["choices"][0]["delta"].get("reasoning_content")

    def content(payloads: list[str]) -> str:
        return "".join(json.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads)

    first = server.chat_call("slow", stream=True)
    resp = first.response()  # the 200 comes at once, before the model is ready
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events = first.events()
    seen = ""
    for payload in events:  # progress while the gate keeps the model loading
        seen += reasoning(payload) or ""
        if re.search(r" \d+s", seen):
            break
    assert "llamaswap loading model: slow" in seen

    with ThreadPoolExecutor(1) as pool:
        plain = pool.submit(server.chat, "slow")  # not streaming: no loading state
        server.wait(lambda: server.scheduler()["models"]["slow"]["waiting"] == 2, "2 waiting for slow")
        second = server.chat_call("next", stream=True)  # must wait for slow: queued
        second_events = second.events()
        seen2 = ""
        for payload in second_events:
            seen2 += reasoning(payload) or ""
            if "Queue position: #1" in seen2:
                break
        assert "llamaswap loading model: next" in seen2
        off = server.chat_call("quiet", stream=True)  # loading state turned off for quiet
        server.wait_queued("quiet")

        gate.open()
        rest = list(events)
        plain = plain.result()
    assert rest[-1] == "[DONE]"
    done = "".join(reasoning(p) or "" for p in rest[:-1])
    assert re.search(r"Done! \(\d+\.\d\ds\)", done)
    answer = content(rest[:-1])
    assert answer.startswith("[slow:") and answer.endswith("You said: hello")
    assert plain.status == 200 and plain.json()["object"] == "chat.completion"

    rest2 = list(second_events)
    assert rest2[-1] == "[DONE]" and content(rest2[:-1]).startswith("[next:")
    quiet = list(off.events())
    assert all(reasoning(p) is None for p in quiet[:-1]) and content(quiet[:-1]).startswith("[quiet:")

    # A model that is ready gets no loading state either.
    ready = list(server.chat_call("next", stream=True).events())
    assert all(reasoning(p) is None for p in ready[:-1]) and content(ready[:-1]).startswith("[next:")


def test_a_second_signal_kills_an_upstream_that_ignores_sigterm(serve):
    # The wrapper ignores SIGTERM and outlives its server: a graceful stop must wait for the
    # SIGKILL deadline (30 s here), unless a second signal says not to.
    script = f"trap '' TERM; {upstream_cmd('stubborn')}; exec sleep 300"
    server = serve({"healthCheckTimeout": 120, "models": {"stubborn": model(shell_cmd(script))}})
    resp = server.chat("stubborn")
    assert resp.status == 200
    python_pid = int(resp.headers["X-Upstream-Pid"])
    leader = server.running()["stubborn"]["pid"]
    assert leader != python_pid

    first = time.monotonic()
    server.send(signal.SIGTERM)
    server.wait(lambda: not pid_alive(python_pid), "the upstream server to take its SIGTERM")
    assert pid_alive(leader) and server.proc.poll() is None  # waiting for the wrapper
    server.send(signal.SIGTERM)
    assert server.terminate(None) == 0  # checks that the leader and its group are gone
    assert time.monotonic() - first < 25  # well before the 30 s deadline
    assert "SIGTERM: killing every upstream process group now" in server.log()
