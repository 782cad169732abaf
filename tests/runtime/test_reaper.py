"""The reaper's parts over real processes: identity by start time before killing, the state
file's leftover cleanup and lock, the watchdog, and the port-holder lookup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from support.upstream import pid_alive, wait_until

from llamaswap.runtime import reaper


def spawn_group(*, child: bool = False) -> tuple[subprocess.Popen, int | None]:
    """A process leading its own group (and optionally a child in that group, which ignores
    SIGTERM); returns the leader and the child's pid."""
    script = "trap '' TERM; sleep 300 & echo $!; wait" if child else "exec sleep 300"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    pid = int(proc.stdout.readline()) if child else None
    return proc, pid


def cleanup(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def write_state(state: reaper.StateFile, owner: int, entries: list[dict]) -> None:
    state.directory.mkdir(parents=True, exist_ok=True)
    state.path.write_text(json.dumps({"version": 1, "pid": owner, "upstreams": entries}))


def test_leftovers_are_killed_only_when_they_are_the_very_processes_recorded(tmp_path):
    live, _ = spawn_group()
    stranger, _ = spawn_group()  # recorded with the wrong start time: a reused pid
    orphaned, member = spawn_group(child=True)  # its leader will be gone, its child left
    try:
        orphaned.kill()
        orphaned.wait()
        assert pid_alive(member) and reaper.group_alive(orphaned.pid)
        state = reaper.StateFile(tmp_path / "run", "k", "/x/config.yaml")
        write_state(
            state,
            999999999,
            [
                {
                    "model": "a",
                    "pid": live.pid,
                    "pgid": live.pid,
                    "start_time": reaper.start_time(live.pid),
                    "port": 1,
                },
                {
                    "model": "b",
                    "pid": stranger.pid,
                    "pgid": stranger.pid,
                    "start_time": reaper.start_time(stranger.pid) - 1,
                    "port": 2,
                },
                {"model": "c", "pid": orphaned.pid, "pgid": orphaned.pid, "start_time": 12345, "port": 3},
            ],
        )
        cleaned = state.acquire()
        assert [line.split("model ")[1].split(",")[0] for line in cleaned] == ["'a'", "'c'"]
        live.wait(5)
        assert live.returncode == -signal.SIGKILL
        wait_until(lambda: not pid_alive(member), message="the orphaned group member to be gone")
        assert stranger.poll() is None, "a reused pid must never be killed"
        data = json.loads(state.path.read_text())
        assert data["pid"] == os.getpid() and data["upstreams"] == []
        state.release()
        assert not state.path.exists() and not state.lock_path.exists()
    finally:
        cleanup(live, stranger, orphaned)


def test_the_lock_refuses_a_second_owner_while_the_first_lives(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from llamaswap.runtime import reaper;"
                f"s = reaper.StateFile(Path({str(tmp_path)!r}), 'k', None); s.acquire();"
                "print('held', flush=True); time.sleep(300)"
            ),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(reaper.AlreadyServing, match=f"another llamaswap \\(pid {holder.pid}\\)"):
            reaper.StateFile(tmp_path, "k", None).acquire()
        holder.kill()  # the kernel drops its lock, however it died
        holder.wait()
        state = reaper.StateFile(tmp_path, "k", None)
        assert state.acquire() == []
        state.release()
    finally:
        cleanup(holder)


def test_the_watchdog_kills_its_groups_when_its_pipe_closes_and_then_exits(tmp_path):
    leader, member = spawn_group(child=True)
    watchdog = reaper.Watchdog()
    try:
        watchdog.start()
        watchdog.add(leader.pid, reaper.start_time(leader.pid))
        spared, _ = spawn_group()
        watchdog.add(spared.pid, reaper.start_time(spared.pid))
        watchdog.remove(spared.pid)
        watchdog.close()  # what llamaswap's death does to the pipe
        assert watchdog.proc.returncode == 0
        leader.wait(5)
        assert not pid_alive(member) and not reaper.group_alive(leader.pid)
        assert spared.poll() is None
    finally:
        cleanup(leader)
        if "spared" in locals():
            cleanup(spared)


def test_a_dead_watchdog_is_replaced_with_every_live_group(tmp_path):
    leader, _ = spawn_group()
    watchdog = reaper.Watchdog()
    try:
        watchdog.start()
        watchdog.add(leader.pid, reaper.start_time(leader.pid))
        first = watchdog.proc
        first.kill()
        first.wait()
        other, _ = spawn_group()
        watchdog.add(other.pid, reaper.start_time(other.pid))  # EPIPE: a new watchdog
        assert watchdog.proc is not first
        watchdog.close()
        leader.wait(5)
        other.wait(5)
    finally:
        cleanup(leader)
        if "other" in locals():
            cleanup(other)


def test_port_holder_names_the_listening_process():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert reaper.port_holder("127.0.0.1", port) is None  # bound, not listening
        s.listen()
        holder = reaper.port_holder("localhost", port)
        assert holder is not None and holder.pid == os.getpid()
        assert holder.describe().startswith(f"port {port} is already in use by pid {os.getpid()} (")
        assert reaper.port_holder("10.1.2.3", port) is None  # not a local address: not ours to judge
    assert reaper.port_holder("127.0.0.1", port) is None


def test_port_holder_says_when_it_is_an_upstream_left_by_a_llamaswap_that_is_gone(tmp_path):
    # Seen as a new user: kill -9 llamaswap (and its watchdog), then serve a copy of the config;
    # the copy's models cannot start while the old upstream holds the port. Say whose it was.
    script = (
        "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
        "print(s.getsockname()[1], flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        run = tmp_path / "run"
        entry = {"model": "w", "pid": proc.pid, "pgid": proc.pid, "start_time": reaper.start_time(proc.pid)}
        state = reaper.StateFile(run, "k", "/x/config.yaml")
        write_state(state, 999999999, [entry | {"port": port}])
        data = json.loads(state.path.read_text()) | {"config": "/x/config.yaml", "start_time": 1}
        state.path.write_text(json.dumps(data))
        holder = reaper.port_holder("127.0.0.1", port, directory=run)
        assert holder is not None and (holder.pid, holder.pgid) == (proc.pid, proc.pid)
        assert holder.describe() == (
            f"port {port} is already in use by pid {proc.pid} ({holder.command}): an upstream left "
            "behind by an earlier llamaswap that served /x/config.yaml and is gone; serving that "
            f"config again stops it (or kill -TERM -{proc.pid})"
        )
        # While that llamaswap lives, its upstream is in use, not left behind.
        state.path.write_text(
            json.dumps(data | {"pid": os.getpid(), "start_time": reaper.start_time(os.getpid())})
        )
        holder = reaper.port_holder("127.0.0.1", port, directory=run)
        assert holder is not None and holder.leftover_of is None
        assert holder.describe() == f"port {port} is already in use by pid {proc.pid} ({holder.command})"
    finally:
        cleanup(proc)


def test_config_keys_follow_the_real_path(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("models: {}\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert reaper.config_key(str(link)) == reaper.config_key(str(target))
    assert reaper.config_key(str(tmp_path / "other.yaml")) != reaper.config_key(str(target))
    assert reaper.config_key(None) == f"demo-{os.getpid()}"
