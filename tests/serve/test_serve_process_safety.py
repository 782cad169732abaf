"""Process safety of `llamaswap serve`, end to end over real processes (issue 12, items 1-4
and 11): no upstream outlives llamaswap however it dies, leftovers of an earlier instance
are stopped, a port someone else holds is a clear start error, SIGHUP and a closed terminal
keep serving, SIGTERM drains, exclusive models never overlap, and crashes are counted."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from serve_support import (
    DEADLINE,
    PY,
    descendants,
    free_port_block,
    in_groups,
    model,
    shell_cmd,
    upstream_cmd,
)
from support.upstream import pid_alive, start_fake_upstream, wait_until

STUBBORN = Path(__file__).resolve().parent.parent / "support" / "stubborn_upstream.py"


def stubborn_cmd(
    *, pidfile: Path | None = None, fork: Path | None = None, ignore_term: bool = False, health: str = "ok"
) -> str:
    parts = [PY, str(STUBBORN), "--port", "${PORT}", "--health", health]
    if pidfile is not None:
        parts += ["--pidfile", str(pidfile)]
    if fork is not None:
        parts += ["--fork", str(fork)]
    if ignore_term:
        parts.append("--ignore-term")
    return " ".join(p if p == "${PORT}" else shlex.quote(p) for p in parts)


def pids_in(path: Path, count: int = 1) -> list[int]:
    def read():
        try:
            pids = [int(x) for x in path.read_text().split()]
        except (OSError, ValueError):
            return None
        return pids if len(pids) >= count else None

    return wait_until(read, timeout=DEADLINE, interval=0.02, message=f"{count} pid(s) in {path}")


def watchdogs_of(pid: int) -> list[int]:
    out = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"llamaswap.runtime.reaper" in cmdline:
            out.append(child)
    return out


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def eviction_count(server, model_id: str, reason: str) -> float:
    text = server.get("/metrics").body.decode()
    match = re.search(
        rf'^llamaswap_evictions_total\{{model="{re.escape(model_id)}",'
        rf'reason="{reason}"\}} (\S+)$',
        text,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


# -- 1. no orphan, ever ------------------------------------------------------------------------


def test_sigkill_of_llamaswap_takes_every_upstream_process_with_it(serve, tmp_path):
    leader_file, child_file = tmp_path / "leader", tmp_path / "child"
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {"m": model(stubborn_cmd(pidfile=leader_file, fork=child_file, ignore_term=True))},
        }
    )
    assert server.post("/v1/chat/completions", {"model": "m"}).status == 200
    leader, grandchild = pids_in(leader_file)[0], pids_in(child_file)[0]
    assert pid_alive(leader) and pid_alive(grandchild)
    watchdogs = watchdogs_of(server.proc.pid)
    everything = descendants(server.proc.pid) | {leader, grandchild}

    serve.started.remove(server)  # it dies by SIGKILL: the clean-exit checks do not apply
    server.proc.kill()
    assert server.proc.wait(DEADLINE) == -signal.SIGKILL
    # The leader dies by its parent-death signal, the grandchild (which ignores SIGTERM) by
    # the watchdog, and the watchdog exits once it is done.
    wait_until(
        lambda: not any(pid_alive(p) for p in everything),
        timeout=15,
        interval=0.02,
        message=f"every process of the killed llamaswap to be gone: "
        f"{sorted(p for p in everything if pid_alive(p))}",
    )
    assert not in_groups({leader})
    assert len(watchdogs) == 1, "one watchdog per llamaswap"


def test_a_new_llamaswap_stops_the_leftovers_of_an_earlier_one(serve, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"  # not the cwd itself: a `llamaswap` dir there would shadow the package
    xdg.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))  # the default runtime dir is under it
    rundir = xdg / "llamaswap"
    leader_file, child_file = tmp_path / "leader", tmp_path / "child"
    config = {
        "healthCheckTimeout": 30,
        "models": {"m": model(stubborn_cmd(pidfile=leader_file, fork=child_file))},
    }
    first = serve(config)
    assert first.post("/v1/chat/completions", {"model": "m"}).status == 200
    leader, grandchild = pids_in(leader_file)[0], pids_in(child_file)[0]
    (state_file,) = rundir.glob("*.json")
    state = json.loads(state_file.read_text())
    assert state["pid"] == first.proc.pid
    [entry] = state["upstreams"]
    assert (entry["model"], entry["pid"], entry["pgid"]) == ("m", leader, leader)
    assert entry["port"] == int(first.upstream_url("m").rsplit(":", 1)[1])
    assert entry["start_time"] == int(
        Path(f"/proc/{leader}/stat").read_bytes().rsplit(b")", 1)[1].split()[19]
    )

    try:
        second = leftover_scenario(serve, config, first, leader, grandchild, state_file)
    finally:
        if pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
    assert second.terminate() == 0
    assert not state_file.exists(), "a clean exit removes its state file"
    assert not state_file.with_suffix(".lock").exists()


def test_the_watchdog_removes_the_state_of_a_killed_llamaswap(serve, tmp_path):
    rundir = tmp_path / "run"
    server = serve({"llamaswap": {"runtimeDir": str(rundir)}, "models": {"m": model(upstream_cmd("m"))}})
    assert server.chat("m").status == 200
    assert sorted(p.suffix for p in rundir.iterdir()) == [".json", ".lock"]
    watchdogs = watchdogs_of(server.proc.pid)
    serve.started.remove(server)
    server.proc.kill()
    server.proc.wait(DEADLINE)
    try:
        server.wait(lambda: not any(rundir.iterdir()), "the watchdog to remove the state file and lock")
    except AssertionError as exc:  # say what was left, and whether the watchdog still runs
        left = {p.name: p.read_text(errors="replace")[:400] for p in rundir.iterdir()}
        alive = [w for w in watchdogs if pid_alive(w)]
        raise AssertionError(
            f"{exc}; left in {rundir}: {left}; watchdogs {watchdogs}, alive {alive}"
        ) from None


def leftover_scenario(serve, config, first, leader, grandchild, state_file):
    # Kill the first llamaswap so that nothing of it can clean up but the parent-death
    # signal (as when its whole cgroup is OOM-killed): freeze it, kill its watchdog, kill it.
    serve.started.remove(first)
    watchdogs = watchdogs_of(first.proc.pid)
    os.kill(first.proc.pid, signal.SIGSTOP)
    for watchdog in watchdogs:
        os.kill(watchdog, signal.SIGKILL)
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait(DEADLINE)
    wait_until(lambda: not pid_alive(leader), timeout=DEADLINE, message="the leader's parent-death signal")
    assert pid_alive(grandchild), "the leftover this test is about"

    second = serve(config)  # the same config file: it finds the state file
    # Cleaned up before the URL was printed: nothing to wait for.
    assert not pid_alive(grandchild)
    assert (
        f"stopping leftover upstream of an earlier llamaswap (pid {first.proc.pid}): "
        f"model 'm', process group {leader}" in second.log()
    )
    assert json.loads(state_file.read_text())["pid"] == second.proc.pid
    assert second.post("/v1/chat/completions", {"model": "m"}).status == 200
    return second


def test_a_second_llamaswap_of_the_same_config_is_refused(serve, tmp_path):
    config = {"llamaswap": {"runtimeDir": str(tmp_path / "run")}, "models": {"m": model(upstream_cmd("m"))}}
    first = serve(config)
    path = serve.write_config(config)
    proc = subprocess.run(
        [PY, "-m", "llamaswap", "serve", str(path), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert f"another llamaswap (pid {first.proc.pid}) is serving this config" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert first.chat("m").status == 200


def test_a_port_already_in_use_is_a_start_error_naming_its_holder(serve):
    port = free_port_block(1)
    impostor = start_fake_upstream(name="impostor", port=port)
    try:
        server = serve(
            {"startPort": port, "healthCheckTimeout": 30, "models": {"m": model(upstream_cmd("m"))}}
        )
        resp = server.chat("m")
        assert resp.status >= 500, resp
        message = resp.json()["error"]["message"]
        assert f"port {port} is already in use by pid {impostor.pid} (" in message, message
        # The impostor's /health never stood in for our upstream, and it saw no request.
        assert impostor.get("/debug/requests").json() == {"requests": []}
        assert server.state("m") == "stopped"
    finally:
        impostor.stop()
    assert server.chat("m").status == 200  # the port is free now: it starts


# -- 2. SIGHUP and a closed terminal ------------------------------------------------------------


def test_sighup_and_a_closed_terminal_keep_serving_and_orphan_nothing(serve, tmp_path):
    leader_file, child_file = tmp_path / "leader", tmp_path / "child"
    master, slave = os.openpty()

    def take_terminal() -> None:  # runs after setsid: the pty becomes the controlling tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        server = serve(
            {
                "healthCheckTimeout": 30,
                "models": {"m": model(stubborn_cmd(pidfile=leader_file, fork=child_file))},
            },
            stdin=slave,
            start_new_session=True,
            preexec_fn=take_terminal,
        )
    finally:
        os.close(slave)
    assert server.post("/v1/chat/completions", {"model": "m"}).status == 200
    leader, grandchild = pids_in(leader_file)[0], pids_in(child_file)[0]
    server.extra_pids |= {leader, grandchild}

    server.proc.send_signal(signal.SIGHUP)
    server.wait(lambda: server.log().count("SIGHUP: reloading the config") == 1, "the SIGHUP to reload")
    assert server.proc.poll() is None
    assert server.post("/v1/chat/completions", {"model": "m"}).status == 200

    os.close(master)  # the terminal goes away: the kernel sends SIGHUP to its session leader
    server.wait(
        lambda: server.log().count("SIGHUP: reloading the config") == 2, "the hang-up's SIGHUP to reload"
    )
    assert server.proc.poll() is None
    assert server.post("/v1/chat/completions", {"model": "m"}).status == 200
    assert pid_alive(leader) and pid_alive(grandchild)
    assert leader in descendants(server.proc.pid), "still llamaswap's child, not an orphan"
    # Teardown: SIGTERM, exit 0, leader and grandchild gone.


# -- 3. drain before stop -----------------------------------------------------------------------


def test_sigterm_lets_requests_in_flight_finish_and_answers_waiting_ones_503(serve):
    server = serve(
        {"healthCheckTimeout": 30, "models": {"a": model(upstream_cmd("a")), "b": model(upstream_cmd("b"))}}
    )
    assert server.chat("a").status == 200
    stream = server.chat_call("a", stream=True, tokens=60, token_delay=0.05)  # about 3 s
    assert stream.response().status == 200
    events = stream.events()
    assert "[a:" in next(events)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(server.chat, "b")  # a is busy: b waits in the queue
        server.wait_queued("b")
        server.send(signal.SIGTERM)
        resp = waiting.result()
    assert resp.status == 503
    assert resp.json()["error"]["message"] == "group is shutting down"
    server.wait(lambda: refused(server.url), "llamaswap to stop accepting connections")
    rest = list(events)
    assert rest[-1] == "[DONE]", "the stream in flight was cut"
    chunks = [json.loads(e) for e in rest[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len(chunks) == 60  # the other 59 tokens and the finish chunk
    assert server.terminate(None) == 0
    assert "every request in flight has finished" in server.log()


def test_the_drain_ends_at_the_shutdown_timeout(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "llamaswap": {"shutdownTimeout": 1.5},
            "models": {"a": model(upstream_cmd("a"))},
        }
    )
    stream = server.chat_call("a", stream=True, tokens=2000, token_delay=0.05)  # 100 s
    events = stream.events()
    next(events)
    began = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.terminate(None) == 0
    took = time.monotonic() - began
    assert 1.5 <= took < 1.5 + 10, took
    assert "[DONE]" not in list(events)
    assert "shutdown timeout (1.5s) reached with requests still in flight" in server.log()


def test_a_second_signal_ends_the_drain_at_once(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "llamaswap": {"shutdownTimeout": 1},
            "models": {"a": model(upstream_cmd("a"))},
        },
        args=("--shutdown-timeout", "120"),
    )  # the flag wins over the config
    stream = server.chat_call("a", stream=True, tokens=2000, token_delay=0.05)
    events = stream.events()
    next(events)
    server.send(signal.SIGINT)
    server.wait(lambda: "requests in flight may finish within 120s" in server.log(), "the drain")
    for _ in range(3):  # still streaming: draining, not stopped
        assert "chat.completion.chunk" in next(events)
    began = time.monotonic()
    server.send(signal.SIGINT)
    assert server.terminate(None) == 0
    assert time.monotonic() - began < 10
    assert "SIGINT: killing every upstream process group now" in server.log()


# -- 4. exclusive means exclusive ---------------------------------------------------------------


def overlap_check(pidfiles: list[Path], violations: Path) -> str:
    """Shell that records every PID listed in `pidfiles` still alive (zombies do not count)."""
    files = " ".join(shlex.quote(str(p)) for p in pidfiles)
    return (
        f"for p in $(cat {files} 2>/dev/null); do "
        f"s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1); "
        f'case "$s" in \'\'|Z|X) ;; *) echo "$p $s" >> {shlex.quote(str(violations))};; esac; '
        f"done; "
    )


def test_a_model_that_failed_its_health_check_is_gone_before_the_next_one_starts(serve, tmp_path):
    a_pids, violations = tmp_path / "a.pids", tmp_path / "violations"
    server = serve(
        {
            "healthCheckTimeout": 4,
            "models": {
                # fails its health check, ignores SIGTERM, and leaves a grandchild that does too
                "a": model(stubborn_cmd(pidfile=a_pids, fork=a_pids, ignore_term=True, health="fail")),
                "b": model(shell_cmd(overlap_check([a_pids], violations) + "exec " + upstream_cmd("b"))),
            },
        }
    )  # no groups: one model at a time
    with ThreadPoolExecutor(2) as pool:
        failed = pool.submit(server.chat, "a")
        server.wait_state("a", "starting")
        pids = pids_in(a_pids, 2)
        server.extra_pids |= set(pids)
        queued = pool.submit(server.chat, "b")
        server.wait_queued("b")
        a_resp, b_resp = failed.result(), queued.result()
    assert a_resp.status == 500 and "health check timed out" in a_resp.json()["error"]["message"]
    assert b_resp.status == 200
    assert not violations.exists(), f"b started while a's processes lived: {violations.read_text()}"
    assert not any(pid_alive(p) for p in pids)


def test_a_swap_starts_its_target_only_after_the_evicted_group_is_gone(serve, tmp_path):
    a_pids, violations = tmp_path / "a.pids", tmp_path / "violations"
    # healthCheckTimeout is also the eviction's graceful-stop timeout (as in llama-swap).
    server = serve(
        {
            "healthCheckTimeout": 2,
            "models": {
                "a": model(stubborn_cmd(pidfile=a_pids, fork=a_pids, ignore_term=True)),
                "b": model(shell_cmd(overlap_check([a_pids], violations) + "exec " + upstream_cmd("b"))),
            },
        }
    )
    assert server.post("/v1/chat/completions", {"model": "a"}).status == 200
    pids = pids_in(a_pids, 2)
    server.extra_pids |= set(pids)
    assert server.chat("b").status == 200  # evicts a: SIGTERM ignored, SIGKILL after 2 s
    assert not violations.exists(), violations.read_text()
    assert not any(pid_alive(p) for p in pids)


# -- 11. crashes are counted as crashes -------------------------------------------------------


def test_a_crash_is_counted_even_while_a_queued_request_was_about_to_evict(serve, tmp_path):
    gate, holder_file = tmp_path / "gate", tmp_path / "holder"
    # A helper in its own session keeps the log pipe open after the upstream dies (as a
    # daemonised helper would), so the exit is noticed late: the eviction comes first.
    holder = f"setsid sh -c 'while [ ! -e {gate} ]; do sleep 0.02; done' & echo $! > {holder_file}; "
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "a": model(shell_cmd(holder + "exec " + upstream_cmd("a"))),
                "b": model(upstream_cmd("b")),
            },
        }
    )
    try:
        stream = server.chat_call("a", stream=True, tokens=2000, token_delay=0.05)
        events = stream.events()
        next(events)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(server.chat, "b")  # will evict a once its stream is done
            server.wait_queued("b")
            os.kill(server.running()["a"]["pid"], signal.SIGKILL)  # a crashes
            try:
                assert "[DONE]" not in list(events)
            except http.client.HTTPException:
                pass  # cut off mid-chunk
            assert queued.result().status == 200
        server.wait(lambda: eviction_count(server, "a", "crash") == 1, "the crash to be counted")
    finally:
        gate.touch()
    helper = pids_in(holder_file)[0]
    server.wait(lambda: not pid_alive(helper), "the pipe holder to leave")
