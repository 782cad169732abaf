"""The process supervisor against real subprocesses: the fake upstream and small scripts.

No mocks and no fixed sleeps: every wait is on an event or a condition under a deadline.
Scripts that must hold a state (e.g. a slow SIGTERM handler) wait for a marker file the
test creates, so the test, not a timer, decides when they move on.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
from support.upstream import (
    fake_upstream_cmd,
    free_port,
    pid_alive,
    wait_until,
    wait_until_async,
)

from llamaswap.runtime.logs import LogHub
from llamaswap.runtime.processes import (
    ModelProcess,
    ProcessSpec,
    ProcessState,
    StartError,
    StateChanged,
)

S = ProcessState


def py(code: str) -> str:
    """A `cmd` running a small Python script (unbuffered, so lines reach the log at once)."""
    return shlex.join([sys.executable, "-u", "-c", textwrap.dedent(code).strip()])


def make_spec(cmd: str, *, port: int | None = None, check_endpoint: str = "none", **kw) -> ProcessSpec:
    port = port or free_port()
    return ProcessSpec(
        model="m", cmd=cmd, proxy=f"http://127.0.0.1:{port}", check_endpoint=check_endpoint, **kw
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[StateChanged] = []
        self.changed = asyncio.Event()

    def __call__(self, event: StateChanged) -> None:
        self.events.append(event)
        self.changed.set()

    def transitions(self) -> list[tuple[str, str]]:
        return [(e.old.value, e.new.value) for e in self.events]

    async def wait_for(self, new: ProcessState, timeout: float = 10.0) -> StateChanged:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.new is new:
                    return event
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))


async def wait_for_log(process: ModelProcess, text: str, timeout: float = 10.0) -> str:
    def find():
        return next((line for line in process.log_history() if text in line), None)

    return await wait_until_async(find, timeout, message=f"log line containing {text!r}")


def run(coro, timeout: float = 30.0, loop_factory=None):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


def loop_factories():
    factories = [pytest.param(None, id="asyncio")]
    try:
        import uvloop
    except ImportError:
        return factories
    return factories + [pytest.param(uvloop.new_event_loop, id="uvloop")]


# A sleeper that survives SIGTERM until `marker` exists, then exits with `code`.
SLOW_STOPPER = """
    import os, signal, sys, time
    marker = sys.argv[1]
    def on_term(*_):
        print("got SIGTERM", flush=True)
        while not os.path.exists(marker):
            time.sleep(0.01)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("pid", os.getpid(), flush=True)
    while True:
        time.sleep(1)
"""


# --- start and readiness -------------------------------------------------------------------


def test_fake_upstream_ready_promptly_shared_start_then_sigterm_stop():
    async def scenario():
        port = free_port()
        spec = make_spec(
            fake_upstream_cmd(port, name="a", startup_delay=0.3),
            port=port,
            check_endpoint="/health",
            health_check_timeout=20,
        )
        rec = Recorder()
        process = ModelProcess(spec, on_state_change=rec)
        try:
            await asyncio.gather(*(process.ensure_ready() for _ in range(3)))
            assert process.state is S.READY
            assert rec.transitions() == [("stopped", "starting"), ("starting", "ready")]
            pid = process.pid
            assert pid is not None and pid_alive(pid)

            async with aiohttp.ClientSession() as session:
                async with session.get(spec.proxy + "/debug/info") as resp:
                    info = await resp.json()
                async with session.post(
                    spec.proxy + "/v1/chat/completions", json={"model": "m", "messages": []}
                ) as resp:
                    assert resp.headers["X-Upstream-Pid"] == str(pid)
            assert info["pid"] == pid
            # Monotonic clocks are shared across processes on Linux: compare directly.
            ready = rec.events[-1]
            lag = ready.at - info["healthy_monotonic"]
            assert 0 <= lag < 0.15, f"ready {lag * 1000:.0f} ms after /health turned 200"
            assert process.state_since == ready.at

            await process.ensure_ready()  # ready: returns at once, no new start
            assert process.pid == pid and len(rec.events) == 2

            began = time.monotonic()
            await process.stop(timeout=5, reason="test")
            assert time.monotonic() - began < 3
            assert process.state is S.STOPPED and process.pid is None
            assert rec.transitions()[2:] == [("ready", "stopping"), ("stopping", "stopped")]
            assert rec.events[2].detail == "test"
            assert rec.events[3].detail == "stopped (exit code 0)"  # SIGTERM: clean exit
            assert rec.events[3].pid == pid
            assert not pid_alive(pid)

            await process.stop(timeout=5)  # stopping a stopped process is a no-op
            assert len(rec.events) == 4
        finally:
            await process.shutdown(timeout=2)

    run(scenario())


def test_premature_exit_fails_at_once_with_the_last_log_lines():
    cmd = py("""
        import sys
        print("loading model", flush=True)
        print("error: out of memory", file=sys.stderr, flush=True)
        sys.exit(7)
    """)

    async def scenario():
        rec = Recorder()
        process = ModelProcess(
            make_spec(cmd, check_endpoint="/health", health_check_timeout=30), on_state_change=rec
        )
        began = time.monotonic()
        with pytest.raises(StartError) as info:
            await process.ensure_ready()
        assert time.monotonic() - began < 3  # not the 30 s health check timeout
        err = info.value
        assert err.kind == "exited" and err.model == "m"
        assert str(err).startswith("upstream command exited prematurely (exit code 7): ")
        assert "loading model\nerror: out of memory" in str(err)
        assert process.state is S.STOPPED
        assert rec.transitions() == [("stopped", "starting"), ("starting", "stopped")]
        await process.shutdown()

    run(scenario())


def test_health_check_timeout_kills_the_process():
    cmd = py("""
        import os, time
        print("pid", os.getpid(), flush=True)
        time.sleep(60)
    """)

    async def scenario():
        rec = Recorder()
        process = ModelProcess(
            make_spec(cmd, check_endpoint="/health", health_check_timeout=0.5), on_state_change=rec
        )
        began = time.monotonic()
        with pytest.raises(StartError) as info:
            await process.ensure_ready()
        assert 0.5 <= time.monotonic() - began < 3
        assert info.value.kind == "health_timeout"
        # The message names the model, what was asked of it, and where its output is.
        port = process.spec.proxy.rsplit(":", 1)[1]
        assert str(info.value) == (
            f"health check timed out after 0.5s: model 'm' never answered 200 at "
            f"{process.spec.health_url} (nothing listened on port {port}: still loading, or does "
            "cmd bind that port?); its output is in /logs/stream/m"
        )
        stopped = await rec.wait_for(S.STOPPED)
        assert not pid_alive(stopped.pid)
        assert rec.transitions() == [
            ("stopped", "starting"),
            ("starting", "stopping"),
            ("stopping", "stopped"),
        ]
        await process.shutdown()

    run(scenario())


def test_concurrent_callers_share_one_failed_start():
    async def scenario():
        rec = Recorder()
        process = ModelProcess(
            make_spec(py("import sys; sys.exit(3)"), check_endpoint="/health"), on_state_change=rec
        )
        results = await asyncio.gather(*(process.ensure_ready() for _ in range(4)), return_exceptions=True)
        assert all(isinstance(r, StartError) and r.kind == "exited" for r in results)
        assert len({id(r) for r in results}) == 1
        assert rec.transitions() == [("stopped", "starting"), ("starting", "stopped")]
        await process.shutdown()

    run(scenario())


def test_command_and_spawn_errors(tmp_path):
    async def scenario():
        rec = Recorder()
        empty = ModelProcess(make_spec("  # only a comment\n\n"), on_state_change=rec)
        with pytest.raises(StartError) as info:
            await empty.ensure_ready()
        assert (info.value.kind, str(info.value)) == (
            "command",
            "model m has no cmd: there is nothing to start",
        )
        assert rec.events == [] and empty.state is S.STOPPED

        missing = ModelProcess(make_spec("/nonexistent/llama-server --port 1"), on_state_change=rec)
        with pytest.raises(StartError) as info:
            await missing.ensure_ready()
        assert info.value.kind == "spawn"
        assert str(info.value) == "unable to start upstream command: '/nonexistent/llama-server' not found"
        assert rec.transitions() == [("stopped", "starting"), ("starting", "stopped")]

        # A bare program name is looked up on PATH; a file that is not executable says so.
        unknown = ModelProcess(make_spec("llama-server-not-installed --port 1"))
        with pytest.raises(StartError) as info:
            await unknown.ensure_ready()
        assert str(info.value) == (
            "unable to start upstream command: 'llama-server-not-installed' not found on PATH"
        )
        plain = tmp_path / "server.sh"
        plain.write_text("#!/bin/sh\n")
        not_exec = ModelProcess(make_spec(f"{plain} --port 1"))
        with pytest.raises(StartError) as info:
            await not_exec.ensure_ready()
        assert str(info.value) == (
            f"unable to start upstream command: '{plain}': permission denied (is it executable?)"
        )
        await asyncio.gather(empty.shutdown(), missing.shutdown(), unknown.shutdown(), not_exec.shutdown())

    run(scenario())


def test_comment_lines_continuations_and_env(monkeypatch):
    monkeypatch.setenv("LLAMASWAP_TEST_INHERITED", "from-parent")
    script = (
        "import json, os, sys; print(json.dumps({'argv': sys.argv[1:], "
        "'foo': os.environ.get('FOO'), 'empty': os.environ.get('EMPTY'), "
        "'inherited': os.environ.get('LLAMASWAP_TEST_INHERITED')}))"
    )
    cmd = "\n".join(
        [
            "# a leading comment",
            f"{shlex.quote(sys.executable)} -u -c {shlex.quote(script)} \\",
            "    # a comment between continued lines",
            "    --alpha 'two words' \\   ",
            "    --beta=$HOME   \\",
            "    '#not-a-comment'",
        ]
    )

    async def scenario():
        process = ModelProcess(make_spec(cmd, env=("FOO=bar=baz", "EMPTY=")))
        await process.ensure_ready()
        line = await wait_for_log(process, '"argv"')
        assert json.loads(line) == {
            "argv": ["--alpha", "two words", "--beta=$HOME", "#not-a-comment"],
            "foo": "bar=baz",
            "empty": "",
            "inherited": "from-parent",
        }
        await process.shutdown()

    run(scenario())


# --- stopping ------------------------------------------------------------------------------


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored():
    cmd = py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("trapped", flush=True)
        while True:
            time.sleep(1)
    """)

    async def scenario():
        rec = Recorder()
        process = ModelProcess(make_spec(cmd), on_state_change=rec)
        await process.ensure_ready()
        await wait_for_log(process, "trapped")
        pid = process.pid
        began = time.monotonic()
        await process.stop(timeout=0.3)
        assert 0.3 <= time.monotonic() - began < 3
        assert rec.events[-1].detail == "stopped (exit code -9 (SIGKILL))"
        assert not pid_alive(pid)
        await process.shutdown()

    run(scenario())


def test_a_stop_that_lasts_says_so_once_with_when_sigkill_follows(monkeypatch, caplog):
    """An upstream that ignores SIGTERM holds a stop (a swap, a shutdown) for its whole
    timeout: after STOP_NOTICE_AFTER the log says it is still waiting and when SIGKILL comes;
    a stop that ends sooner says nothing of the kind."""
    import llamaswap.runtime.processes as processes

    monkeypatch.setattr(processes, "STOP_NOTICE_AFTER", 0.2)
    stubborn = py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("trapped", flush=True)
        while True:
            time.sleep(1)
    """)
    polite = py("""
        import time
        print("up", flush=True)
        while True:
            time.sleep(1)
    """)

    async def scenario():
        caplog.set_level("INFO", logger=processes.logger.name)
        process = ModelProcess(make_spec(stubborn))
        await process.ensure_ready()
        await wait_for_log(process, "trapped")
        await process.stop(timeout=1.5)
        notices = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
        assert len(notices) == 1, notices
        assert re.fullmatch(
            r"m: still running 0\.2s after SIGTERM; waiting for it to exit, SIGKILL in 1s", notices[0]
        ), notices
        await process.shutdown()
        caplog.clear()
        process = ModelProcess(make_spec(polite))
        await process.ensure_ready()
        await wait_for_log(process, "up")
        await process.stop(timeout=1.5)
        await process.shutdown()
        assert not [r for r in caplog.records if "still running" in r.getMessage()]

    run(scenario())


def test_cmd_stop_runs_with_the_pid_instead_of_sigterm(tmp_path: Path):
    marker = tmp_path / "cmdstop.txt"
    # The upstream exits 42 on SIGUSR1 and ignores SIGTERM: exit code 42 proves cmdStop ran.
    cmd = py("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, lambda *_: sys.exit(42))
        print("armed", flush=True)
        while True:
            time.sleep(1)
    """)
    stop_script = (
        "import os, signal, sys; open(sys.argv[2], 'w').write(sys.argv[1]); "
        "print('cmdStop for', sys.argv[1]); os.kill(int(sys.argv[1]), signal.SIGUSR1)"
    )
    cmd_stop = f"{shlex.quote(sys.executable)} -u -c {shlex.quote(stop_script)} ${{PID}} {marker}"

    async def scenario():
        rec = Recorder()
        process = ModelProcess(make_spec(cmd, cmd_stop=cmd_stop), on_state_change=rec)
        await process.ensure_ready()
        await wait_for_log(process, "armed")
        pid = process.pid
        await process.stop(timeout=10)
        assert rec.events[-1].detail == "stopped (exit code 42)"
        assert marker.read_text() == str(pid)
        assert f"cmdStop for {pid}" in await wait_for_log(process, "cmdStop for")
        assert not pid_alive(pid)
        await process.shutdown()

    run(scenario())


def test_a_cmd_stop_that_fails_is_logged_with_why(caplog):
    """llama-swap logs a cmdStop that fails. Before: a cmdStop whose program is missing logged
    `cmdStop failed ([Errno 2] No such file or directory)` without naming it, and one that
    exited 1 logged nothing: the stop then lasted its whole timeout and the log said only
    `graceful stop timed out`."""
    import llamaswap.runtime.processes as processes

    polite = py("""
        import time
        print("up", flush=True)
        while True:
            time.sleep(1)
    """)
    failing_stop = f"{shlex.quote(sys.executable)} -c 'import sys; print(\"no such container\"); sys.exit(3)'"

    async def scenario():
        caplog.set_level("INFO", logger=processes.logger.name)
        missing = ModelProcess(make_spec(polite, cmd_stop="/nonexistent/docker stop m"))
        await missing.ensure_ready()
        await wait_for_log(missing, "up")
        await missing.stop(timeout=10)  # SIGTERM instead: ends at once
        messages = [r.getMessage() for r in caplog.records]
        assert "m: cmdStop failed: '/nonexistent/docker' not found; sending SIGTERM" in messages
        await missing.shutdown()

        caplog.clear()
        failing = ModelProcess(make_spec(polite, cmd_stop=failing_stop))
        await failing.ensure_ready()
        await wait_for_log(failing, "up")
        pid = failing.pid
        await failing.stop(timeout=2)  # nothing stops it: SIGKILL at the timeout
        assert not pid_alive(pid)
        messages = [r.getMessage() for r in caplog.records if "cmdStop failed" in r.getMessage()]
        assert len(messages) == 1 and re.fullmatch(
            r"m: cmdStop failed \(exit code 3; its output is in /logs/stream/m\);"
            r" waiting for the process to exit, SIGKILL in [0-2]s",
            messages[0],
        ), messages
        assert "no such container" in await wait_for_log(failing, "no such container")
        await failing.shutdown()

    run(scenario())


GRANDCHILD = """
    import os, signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    print("grandchild", child.pid, flush=True)
    marker = sys.argv[1] if len(sys.argv) > 1 else None
    while not (marker and os.path.exists(marker)):
        time.sleep(0.01)
    sys.exit(5)
"""


# The same, with a leader that ignores SIGTERM too.
STUBBORN_GRANDPARENT = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + textwrap.dedent(
    GRANDCHILD
)


@pytest.mark.parametrize("loop_factory", loop_factories())
def test_a_grandchild_dies_with_the_group_on_stop(loop_factory):
    async def scenario():
        process = ModelProcess(make_spec(py(GRANDCHILD)))
        await process.ensure_ready()
        grandchild = int((await wait_for_log(process, "grandchild")).split()[1])
        pid = process.pid
        began = time.monotonic()
        await process.stop(timeout=10)
        assert time.monotonic() - began < 3  # the leader went on SIGTERM; no 10 s wait
        await wait_until_async(lambda: not pid_alive(grandchild), 5, message="grandchild gone")
        assert not pid_alive(pid)
        await process.shutdown()

    run(scenario(), loop_factory=loop_factory)


@pytest.mark.parametrize("loop_factory", loop_factories())
def test_crash_after_ready_is_reported_even_if_a_grandchild_holds_the_pipe(tmp_path: Path, loop_factory):
    marker = tmp_path / "crash-now"

    async def scenario():
        rec = Recorder()
        process = ModelProcess(make_spec(f"{py(GRANDCHILD)} {marker}"), on_state_change=rec)
        await process.ensure_ready()
        grandchild = int((await wait_for_log(process, "grandchild")).split()[1])
        pid = process.pid
        marker.touch()
        crashed = await rec.wait_for(S.STOPPED, timeout=5)
        assert (crashed.old, crashed.pid) == (S.READY, pid)
        assert crashed.detail == "upstream process exited unexpectedly (exit code 5)"
        assert process.state is S.STOPPED
        await wait_until_async(lambda: not pid_alive(grandchild), 5, message="grandchild gone")

        marker.unlink()
        await process.ensure_ready()  # no automatic restart, but the next caller starts it
        assert process.pid not in (None, pid)
        await process.shutdown(timeout=2)

    run(scenario(), loop_factory=loop_factory)


def test_ensure_ready_during_a_stop_waits_it_out_then_starts_anew(tmp_path: Path):
    marker = tmp_path / "let-it-exit"

    async def scenario():
        rec = Recorder()
        process = ModelProcess(make_spec(f"{py(SLOW_STOPPER)} {marker}"), on_state_change=rec)
        await process.ensure_ready()
        await wait_for_log(process, "pid")
        first = process.pid
        stop = asyncio.create_task(process.stop(timeout=20))
        await wait_for_log(process, "got SIGTERM")
        assert process.state is S.STOPPING
        start = asyncio.create_task(process.ensure_ready())
        marker.touch()
        await asyncio.gather(stop, start)
        assert process.state is S.READY
        assert process.pid not in (None, first)
        assert not pid_alive(first)
        assert rec.transitions() == [
            ("stopped", "starting"),
            ("starting", "ready"),
            ("ready", "stopping"),
            ("stopping", "stopped"),
            ("stopped", "starting"),
            ("starting", "ready"),
        ]
        await process.shutdown(timeout=5)

    run(scenario())


def test_a_stop_while_starting_aborts_the_start():
    cmd = py("import time; time.sleep(60)")

    async def scenario():
        rec = Recorder()
        process = ModelProcess(
            make_spec(cmd, check_endpoint="/health", health_check_timeout=30), on_state_change=rec
        )
        # Spawned and polling /health: the stop aborts a start in progress.
        starting = asyncio.create_task(process.ensure_ready())
        await wait_until_async(lambda: process.pid, 10, message="spawned")
        pid = process.pid
        await process.stop(timeout=5)
        with pytest.raises(StartError) as info:
            await starting
        assert (str(info.value), info.value.kind) == ("aborted", "aborted")
        assert not pid_alive(pid)

        # Stop queued right behind the start, before the spawn finished.
        results = await asyncio.gather(
            process.ensure_ready(), process.stop(timeout=5), return_exceptions=True
        )
        assert isinstance(results[0], StartError) and results[0].kind == "aborted"
        assert results[1] is None
        assert process.state is S.STOPPED
        assert not pid_alive(rec.events[-1].pid)
        assert (
            rec.transitions()
            == [("stopped", "starting"), ("starting", "stopping"), ("stopping", "stopped")] * 2
        )
        await process.shutdown()

    run(scenario())


def test_shutdown_leaves_no_process_alive(tmp_path: Path):
    async def scenario():
        plain = ModelProcess(make_spec(py("import time; print('up', flush=True); time.sleep(60)")))
        stubborn = ModelProcess(make_spec(py(STUBBORN_GRANDPARENT)))
        starting = ModelProcess(make_spec(py("import time; time.sleep(60)"), check_endpoint="/health"))
        never = ModelProcess(make_spec(py("pass")))
        await asyncio.gather(plain.ensure_ready(), stubborn.ensure_ready())
        grandchild = int((await wait_for_log(stubborn, "grandchild")).split()[1])
        pending = asyncio.create_task(starting.ensure_ready())
        await wait_until_async(lambda: starting.pid, 10, message="spawned")
        pids = [plain.pid, stubborn.pid, starting.pid, grandchild]

        processes = (plain, stubborn, starting, never)
        began = time.monotonic()
        await asyncio.gather(*(p.shutdown(timeout=0.3) for p in processes))
        assert time.monotonic() - began < 3
        assert [p.state for p in processes] == [S.SHUTDOWN] * 4
        with pytest.raises(StartError) as info:
            await pending
        assert info.value.kind == "shutdown"
        await wait_until_async(lambda: not any(pid_alive(p) for p in pids), 5, message="every process gone")
        for p in processes:
            with pytest.raises(StartError) as info:
                await p.ensure_ready()
            assert info.value.kind == "shutdown"
            await p.stop()  # no-op
            await p.shutdown()  # idempotent

    run(scenario())


# --- logs ----------------------------------------------------------------------------------


def test_process_output_fills_a_bounded_log():
    cmd = py("""
        import sys
        for i in range(500):
            print("line", i, file=sys.stderr if i % 2 else sys.stdout)
        print("partial-last-line", end="")
    """)

    async def scenario():
        rec = Recorder()
        hub = LogHub(max_lines=50)
        process = ModelProcess(make_spec(cmd), on_state_change=rec, log=hub.model("m"))
        await process.ensure_ready()
        await rec.wait_for(S.STOPPED)
        history = process.log_history()
        assert len(history) == 50
        assert history[-2:] == ["line 499", "partial-last-line"]
        assert hub.upstream.history()[-1] == "[m] partial-last-line"
        await process.shutdown()

    run(scenario())


def test_an_owner_cancelled_without_shutdown_still_kills_its_upstream():
    async def scenario():
        process = ModelProcess(make_spec(py("import time; time.sleep(60)")))
        await process.ensure_ready()
        return process.pid

    pid = run(scenario())  # the runner cancels the owner task when it closes the loop
    wait_until(lambda: not pid_alive(pid), 5, message="upstream gone")


# -- placement (resources): ${GPU}/${GPUS} and the visible-devices variables -------------------


def test_device_macros_and_visible_devices_come_from_the_placement():
    from llamaswap.runtime.processes import DevicePlacement, device_environment, with_devices

    two = DevicePlacement(("gpu0", "gpu1"), ("0", "3"))
    assert with_devices("srv --main-gpu ${GPU} --gpus ${GPUS}", two) == "srv --main-gpu 0 --gpus 0,3"
    assert with_devices("srv ${GPU}", None) == "srv ${GPU}"
    spec = ProcessSpec(model="m", cmd="srv", proxy="http://127.0.0.1:1")
    assert device_environment(spec, two) == {"CUDA_VISIBLE_DEVICES": "0,3", "HIP_VISIBLE_DEVICES": "0,3"}
    assert device_environment(spec, None) == {}
    assert device_environment(spec, DevicePlacement((), ())) == {}  # placed nowhere: untouched
    own_env = ProcessSpec(model="m", cmd="srv", proxy="http://127.0.0.1:1", env=("HIP_VISIBLE_DEVICES=1",))
    own_cmd = ProcessSpec(model="m", cmd="env CUDA_VISIBLE_DEVICES=2 srv", proxy="http://127.0.0.1:1")
    assert device_environment(own_env, two) == {} and device_environment(own_cmd, two) == {}
