"""Failure paths, end to end: clients that leave, upstreams that crash, fail their health
check or never start, TTL unloads, unloads during a swap, 429."""

from __future__ import annotations

import http.client as httpclient
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_support import Gate, envelope, model, shell_cmd, upstream_cmd
from support.upstream import http, pid_alive

pytestmark = pytest.mark.e2e


def upstream_inflight(server, model_id: str) -> dict:
    resp = http("GET", server.upstream_url(model_id) + "/debug/inflight")
    assert resp.status == 200
    return resp.json()


def consistent_and_idle(snap: dict) -> bool:
    """Nothing queued, waiting, swapping or in flight, and no reservation left behind."""
    return (
        not snap["queue"]
        and not snap["swaps"]
        and all(
            m["in_flight"] == 0 and m["reserved"] == 0 and m["waiting"] == 0 for m in snap["models"].values()
        )
    )


def test_clients_that_leave_free_their_slot_and_cancel_the_upstream(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"), concurrencyLimit=1)},
            "matrix": {"sets": {"only_a": "a", "only_b": "b"}},
        }
    )
    assert server.chat("a").status == 200

    # A stream that never ends on its own holds `a` in flight.
    hold = server.chat_call("a", stream=True, tokens=100000, token_delay=0.05)
    events = hold.events()
    first = json.loads(next(events))
    assert first["choices"][0]["delta"]["content"].startswith("[a:")
    # The first chunk reached us while the upstream is still generating: not buffered.
    assert upstream_inflight(server, "a")["inflight"] == 1
    assert hold.response().getheader("X-Accel-Buffering") == "no"

    # b must evict a, which is busy: b is queued (and holds b's only slot).
    queued = server.chat_call("b")
    snap = server.wait_queued("b")
    assert snap["models"]["b"]["reserved"] == 1 and snap["models"]["a"]["in_flight"] == 1
    over = server.chat("b")
    assert over.status == 429
    assert over.headers["Retry-After"] == "1"
    assert over.json() == envelope("Too many requests", "rate_limit_error", "concurrency_limit")

    # The queued client leaves: its slot is free again, the scheduler forgets it.
    queued.disconnect()
    server.wait(lambda: not server.scheduler()["queue"], "the queue to be empty")
    assert server.scheduler()["models"]["b"]["reserved"] == 0
    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(server.chat, "b", "later")
        server.wait_queued("b")  # admitted, not 429
        # The streaming client leaves mid-stream: a's in-flight slot is released, and the
        # queued b request proceeds (evicting a).
        hold.disconnect()
        rb = later.result()
    assert rb.status == 200
    assert rb.json()["choices"][0]["message"]["content"].startswith("[b:")
    assert "evicted=a;" in rb.headers["X-Llamaswap-Swap"]
    server.wait(lambda: consistent_and_idle(server.scheduler()), "an idle, consistent scheduler")
    assert set(server.running()) == {"b"}

    # Leaving mid-stream cancels the upstream's work (b stays loaded, so we can ask it).
    stream = server.chat_call("b", stream=True, tokens=100000, token_delay=0.05)
    next(stream.events())
    assert upstream_inflight(server, "b") == {"inflight": 1, "total": 2, "cancelled": 0}
    stream.disconnect()
    server.wait(
        lambda: upstream_inflight(server, "b") == {"inflight": 0, "total": 2, "cancelled": 1},
        "the upstream to see its request cancelled",
    )
    server.wait(lambda: consistent_and_idle(server.scheduler()), "an idle, consistent scheduler")


def test_crash_mid_request_gives_502_and_the_next_request_restarts(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {"m": model(upstream_cmd("m"), aliases=["m-alias"])},
        }
    )
    first = server.chat("m")
    pid1 = int(first.headers["X-Upstream-Pid"])

    # Crash while a request waits for its answer (no response headers yet): 502 envelope.
    pending = server.chat_call("m", delay=60)
    server.wait(lambda: upstream_inflight(server, "m")["inflight"] == 1, "the request upstream")
    os.kill(pid1, signal.SIGKILL)
    resp = pending.response()
    body = json.loads(resp.read())
    assert resp.status == 502
    assert body["src"] == "llama-swap"
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "bad_gateway"
    assert body["error"]["message"].startswith("upstream error (m): ")
    # The crash marks the model stopped, in the scheduler too.
    server.wait(lambda: server.state("m") == "stopped", "m to be stopped")
    server.wait(lambda: server.scheduler()["models"]["m"]["state"] == "stopped", "the scheduler to see it")
    models = {r["id"]: r for r in server.get("/v1/models").json()["data"]}
    assert models["m"]["status"]["value"] == "unloaded"

    # The next request starts it again.
    second = server.chat("m-alias")
    assert second.status == 200
    pid2 = int(second.headers["X-Upstream-Pid"])
    assert pid2 != pid1 and not pid_alive(pid1)
    assert "X-Llamaswap-Swap" in second.headers

    # A crash after the response started aborts the stream: the client must not see a
    # clean end of a truncated answer.
    stream = server.chat_call("m", stream=True, tokens=100000, token_delay=0.05)
    next(stream.events())
    os.kill(pid2, signal.SIGKILL)
    with pytest.raises((httpclient.IncompleteRead, ConnectionError)):
        stream.response().read()  # (readline would hide the missing last chunk)
    server.wait(lambda: server.state("m") == "stopped", "m to be stopped again")
    third = server.chat("m")
    assert third.status == 200 and int(third.headers["X-Upstream-Pid"]) not in (pid1, pid2)
    server.wait(lambda: consistent_and_idle(server.scheduler()), "an idle, consistent scheduler")


def test_a_crash_mid_stream_ends_the_stream_with_an_error_event_the_openai_sdk_raises(serve):
    import openai

    server = serve({"healthCheckTimeout": 30, "models": {"m": model(upstream_cmd("m"))}})
    first = server.chat("m")
    pid = int(first.headers["X-Upstream-Pid"])
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=30.0) as client:
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_body={"tokens": 100000, "token_delay": 0.05},
        )
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.content.startswith("[m:")
        os.kill(pid, signal.SIGKILL)
        # Not a bare "Connection error." (nor a clean end of a truncated answer): the SDK
        # raises the stream's last event, which says what happened.
        with pytest.raises(openai.APIError) as raised:
            for _ in chunks:
                pass
    assert not isinstance(raised.value, openai.APIConnectionError)
    assert raised.value.message.startswith("upstream failed mid-stream: ")
    assert raised.value.body == {
        "message": raised.value.message,
        "type": "server_error",
        "param": None,
        "code": "bad_gateway",
    }
    server.wait(lambda: server.state("m") == "stopped", "m to be stopped")
    again = server.chat("m")
    assert again.status == 200 and int(again.headers["X-Upstream-Pid"]) != pid


def test_a_cmd_whose_program_is_missing_gives_500_naming_it(serve):
    server = serve(
        {
            "models": {
                "gone": model("/opt/llama.cpp/build/bin/llama-server --port ${PORT} -m /m.gguf"),
                "typo": model("lama-server --port ${PORT} -m /m.gguf"),
            }
        }
    )
    for name, why in [
        ("gone", "'/opt/llama.cpp/build/bin/llama-server' not found"),
        ("typo", "'lama-server' not found on PATH"),
    ]:
        resp = server.chat(name)
        assert resp.status == 500
        assert resp.json() == envelope(
            f"unspecific error: unable to start upstream command: {why}", "server_error", "internal_error"
        )
        assert f"{name}: unable to start upstream command: {why}" in server.log()
        assert server.state(name) == "stopped"
    assert "Traceback" not in server.log()


def test_checkendpoint_none_not_listening_yet_says_why(serve, tmp_path):
    """`checkEndpoint: none` makes a model ready as soon as its process starts (as in
    llama-swap), so a first request usually reaches it before its server listens. Before:
    502 `upstream error (n): cannot connect to 127.0.0.1:PORT: connection refused`, with no word
    on why a model that /running says is ready refuses connections."""
    gate = Gate(tmp_path / "gate")  # the process runs, its server does not listen yet
    server = serve({"models": {"n": model(gate.wrap(upstream_cmd("n")), checkEndpoint="none")}})
    resp = server.chat("n")
    assert resp.status == 502, resp
    message = resp.json()["error"]["message"]
    assert re.fullmatch(
        r"upstream error \(n\): cannot connect to 127\.0\.0\.1:\d+: connection refused \(checkEndpoint"
        r" is none: the model counts as ready once its process starts, before its server listens;"
        r" give checkEndpoint a path that answers 200 when it is ready, e\.g\. /health, and"
        r" requests wait for it\)",
        message,
    ), message
    gate.open()
    server.wait(lambda: server.chat("n").status == 200, "n to answer once it listens")
    assert "Traceback" not in server.log()


def test_failed_start_gives_500_and_the_next_request_retries(serve, tmp_path):
    flag = tmp_path / "second-run"
    script = (
        f"if [ -e {flag} ]; then exec {upstream_cmd('f')}; "
        f"else touch {flag}; echo 'no GPU today' >&2; exit 3; fi"
    )
    server = serve(
        {"healthCheckTimeout": 30, "logLevel": "warn", "models": {"f": model(shell_cmd(script))}},
        args=("--log-level", "debug"),
    )  # the flag wins over the config's logLevel
    first = server.chat("f")
    assert first.status == 500
    # The client gets the reason; the upstream's own output stays in the logs.
    assert first.json() == envelope(
        "unspecific error: upstream command exited prematurely (exit code 3); its output is in /logs/stream/f",
        "server_error",
        "internal_error",
    )
    assert "no GPU today" in server.get("/logs").body.decode()
    assert server.state("f") == "stopped"
    second = server.chat("f")
    assert second.status == 200
    assert second.json()["choices"][0]["message"]["content"].startswith("[f:")
    assert "DEBUG llamaswap.process: f: starting -> stopped" in server.log()  # a debug-only line


def test_a_start_killed_by_a_signal_keeps_the_upstream_output_from_the_client(serve):
    """The OOM killer (SIGKILL) or a crash (SIGSEGV) while a model loads. Before: the 500's
    message carried the upstream's last output lines (`... (exit code -9 (SIGKILL)):
    <output>`), which a failed start that exits with a code keeps in the logs."""
    server = serve(
        {"models": {"k": model(shell_cmd("echo 'token=s3cret loading'; kill -9 $$") + " ${PORT}")}}
    )
    resp = server.chat("k")
    assert resp.status == 500
    assert resp.json() == envelope(
        "unspecific error: upstream command exited prematurely (exit code -9 (SIGKILL)); its output is in /logs/stream/k",
        "server_error",
        "internal_error",
    )
    assert "token=s3cret loading" in server.get("/logs").body.decode()


def test_health_check_timeout_gives_500_and_the_next_request_retries(serve):
    # healthCheckTimeout is honoured as written (llama-swap would raise 1 to 15).
    server = serve({"healthCheckTimeout": 1, "models": {"h": model(upstream_cmd("h", fail_health=True))}})
    started = time.monotonic()
    first = server.chat("h")
    assert time.monotonic() - started >= 0.99  # (ms granularity of the loop clock)
    assert first.status == 500
    body = first.json()
    # The message names the model, the URL it never answered, and where its output is.
    assert re.fullmatch(
        r"unspecific error: health check timed out after 1s: model 'h' never answered 200 at "
        # (under load the upstream may not have bound its port within 1 s: then a hint says so)
        r"http://127\.0\.0\.1:\d+/health"
        r"( \(nothing listened on port \d+: still loading, or does cmd bind that port\?\))?"
        r"; its output is in /logs/stream/h",
        body["error"]["message"],
    ), body
    assert (body["error"]["type"], body["error"]["code"]) == ("server_error", "internal_error")
    second = server.chat("h")  # a fresh attempt, not a cached failure
    assert second.status == 500
    assert "health check timed out" in second.json()["error"]["message"]
    assert server.scheduler()["swaps_started"] == 2
    assert server.log().count("h: health check timed out after 1s") == 2
    server.wait(lambda: server.state("h") == "stopped", "h to be stopped")


def test_ttl_unloads_idle_models_and_never_one_in_use(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "globalTTL": 1,
            "models": {
                "t": model(upstream_cmd("t"), ttl=1),
                "g": model(upstream_cmd("g")),  # ttl -1: globalTTL
                "keep": model(upstream_cmd("keep"), ttl=0),
            },  # never
            "matrix": {"sets": {"all": "t & g & keep"}},
        }
    )
    with ThreadPoolExecutor(3) as pool:  # they may run together: load them in parallel
        loaded = dict(zip(("keep", "g", "t"), pool.map(server.chat, ("keep", "g", "t"))))
    assert all(r.status == 200 for r in loaded.values())
    pid = loaded["t"].headers["X-Upstream-Pid"]
    # A request that lasts longer than the TTL keeps the model loaded throughout: same
    # process, and a 200 (an unload under it would have cut it off).
    sent = time.monotonic()
    long = server.chat("t", delay=2)
    assert long.status == 200 and long.headers["X-Upstream-Pid"] == pid
    server.wait(lambda: set(server.running()) == {"keep"}, "t and g to be unloaded")
    # t went only after a full TTL of idleness after its request ended: the request took at
    # least 2 s (the upstream's delay), so that is at least 3 s after it was sent (monotonic
    # clocks are shared between processes; 0.1 s of slack for the loop clock's granularity).
    assert time.monotonic() - sent >= 2.9
    log = server.get("/logs").body.decode()
    assert "t: unloading model, TTL of 1.0s reached" in log
    assert "g: unloading model, TTL of 1.0s reached" in log
    # keep has been idle at least as long as g, and longer than t: with any TTL it would be
    # gone too.
    assert server.running()["keep"]["state"] == "ready"
    server.wait(lambda: consistent_and_idle(server.scheduler()), "an idle, consistent scheduler")


def test_unload_during_a_swap(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "u": model(gate.wrap(upstream_cmd("u")), aliases=["u-alias"]),
                "v": model(upstream_cmd("v")),
            },
            "matrix": {"sets": {"both": "u & v"}},
        }
    )
    assert server.chat("v").status == 200
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(server.chat, "u")
        entry = server.wait_state("u", "starting")
        leader = entry["pid"]
        resp = server.get("/unload")
        assert (resp.status, resp.body) == (200, b"OK")
        # It returns once everything is stopped.
        assert server.running() == {}
        assert not pid_alive(leader)
        waited = pending.result()
    assert waited.status == 500
    assert waited.json() == envelope(
        "unspecific error: matrix: model unloaded", "server_error", "internal_error"
    )
    server.wait(lambda: consistent_and_idle(server.scheduler()), "an idle, consistent scheduler")
    assert all(m["state"] == "stopped" for m in server.scheduler()["models"].values())

    # The model loads again on the next request.
    gate.open()
    again = server.chat("u")
    assert again.status == 200 and again.json()["choices"][0]["message"]["content"].startswith("[u:")
    assert server.chat("v").status == 200

    # Unload one model by alias; an unknown one is 404; POST /api/models/unload unloads all.
    resp = server.post("/api/models/unload/u-alias")
    assert (resp.status, resp.body) == (200, b"OK")
    assert set(server.running()) == {"v"}
    resp = server.post("/api/models/unload/nope")
    assert resp.status == 404
    assert resp.json() == envelope("model not found", "invalid_request_error", "not_found")
    resp = server.post("/api/models/unload")
    assert (resp.status, resp.json()) == (200, {"msg": "ok"})
    assert server.running() == {}
