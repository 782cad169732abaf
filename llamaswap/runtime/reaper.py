"""Reaper: no upstream process outlives llamaswap, however llamaswap ends.

Three layers, each covering what the one before cannot:

1. Parent-death signal. Every upstream's leader is spawned with PR_SET_PDEATHSIG = SIGKILL
   (`pdeathsig_preexec`), so the kernel kills it the moment llamaswap dies, SIGKILL and the
   OOM killer included. It reaches the leader only, not what the leader forked.
2. The watchdog: one small process per llamaswap (`Watchdog`, `python -m
   llamaswap.runtime.reaper watch`), in its own session so a terminal's SIGINT/SIGHUP never
   reaches it. llamaswap tells it over a pipe which process groups are live (`+PGID START`,
   `-PGID`). When the pipe reaches EOF (llamaswap is gone: the kernel closes the write end
   whatever killed it) it SIGKILLs every group it still holds, waits until they are gone,
   removes the state file, and exits. It lives exactly as long as llamaswap plus that cleanup.
3. The state file (`StateFile`), under the runtime dir and keyed by the config's real path:
   llamaswap's pid and start time and, for every upstream, pid, pgid, start time and port.
   The next llamaswap of the same config reads it before serving and kills whatever layers
   1 and 2 missed (both can be killed at once, e.g. by `kill -9` of a whole cgroup's worth
   of processes). An exclusive flock next to it says whether its owner is still alive.

Identity before killing: a pid can be reused, so a group is killed only when its leader is
the very process recorded (same start time in /proc/PID/stat), or when the leader is gone —
then the group id cannot have been reused while any member lives (Linux keeps a pid number
allocated while it is some process's pgid), so whatever still carries it is ours.

`port_holder` names the process listening on a TCP port (/proc/net/tcp{,6}, then the socket
inode in /proc/*/fd), for the clear "port in use" start error.

Linux only where /proc and prctl are needed; elsewhere the helpers degrade to doing nothing.
This module imports only the standard library: the watchdog runs it as a fresh interpreter.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
# How long a cleanup (watchdog or leftovers) waits for SIGKILLed groups to be gone.
REAP_DEADLINE = 10.0
LOCK_RELEASE_WAIT = 2.0  # how long the watchdog waits for its dead parent's lock to be released
STATE_VERSION = 1


# -- /proc ---------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat from the state on (index 0 = state, field 3 in proc(5))."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, proc(5) field 22); None if gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def is_process(pid: int, started: int | None) -> bool:
    """Whether `pid` is alive and is the very process that started at `started`."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X") and int(fields[19]) == started


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    """Whether any live process is in group `pgid`. Zombies do not count: a zombie holds no
    memory, no port and no GPU, and one whose parent never reaps it must not hold us up."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return bool(group_members(pgid)) if os.path.isdir("/proc") else True


def killpg(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def ours(pgid: int, leader_start: int | None) -> bool:
    """Whether group `pgid` is still the one whose leader started at `leader_start`."""
    fields = _stat_fields(pgid)
    if fields is None or fields[0] in (b"Z", b"X"):
        return True  # the leader is gone: the number cannot be reused while members live
    return int(fields[19]) == leader_start


def kill_groups(
    groups: Iterable[tuple[int, int | None]],
    deadline: float = REAP_DEADLINE,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """SIGKILL each (pgid, leader start time) that is still ours and wait until they are all
    gone (re-sending SIGKILL while waiting). Returns the groups still alive at the deadline."""
    targets = [pgid for pgid, started in groups if pgid > 1 and ours(pgid, started)]
    for pgid in targets:
        killpg(pgid, signal.SIGKILL)
    end = time.monotonic() + deadline
    left = [p for p in targets if group_alive(p)]
    while left and time.monotonic() < end:
        sleep(0.01)
        for pgid in left:
            killpg(pgid, signal.SIGKILL)
        left = [p for p in left if group_alive(p)]
    return left


# -- parent-death signal -------------------------------------------------------------------


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGKILL when this process dies (None where
    the platform has no such thing). It runs after `setsid` (start_new_session), so the
    child still leads its own session and process group."""
    if _PRCTL is None:
        return None
    parent = os.getpid()
    prctl = _PRCTL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


# -- ports ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortHolder:
    port: int
    pid: int | None
    command: str
    # When the holder is an upstream a llamaswap that is gone left behind: the config that
    # llamaswap served, and the holder's process group.
    leftover_of: str | None = None
    pgid: int | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"port {self.port} is already in use (by a process llamaswap cannot inspect)"
        text = f"port {self.port} is already in use by pid {self.pid} ({self.command})"
        if self.leftover_of is not None:
            text += (
                f": an upstream left behind by an earlier llamaswap that served {self.leftover_of} "
                f"and is gone; serving that config again stops it (or kill -TERM -{self.pgid})"
            )
        return text


def _local(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _listening(
    port: int | None = None,
) -> dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Listening TCP sockets (of `port`, or every port): inode -> (address, port)."""
    found: dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A":  # 0A = LISTEN
                continue
            addr, _, hexport = cols[1].rpartition(":")
            if port is not None and int(hexport, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if len(raw) == 4:
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(raw[::-1])
            else:  # four little-endian 32-bit words
                ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                if ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
            found[int(cols[9])] = (ip, int(hexport, 16))
    return found


def _listening_inodes(port: int) -> list[int]:
    return [inode for inode, (ip, _) in _listening(port).items() if ip.is_loopback or ip.is_unspecified]


def listening_on(port: int) -> bool:
    """Whether anything listens on loopback/wildcard `port` (False where /proc cannot tell)."""
    return bool(_listening_inodes(port))


def is_local(host: str) -> bool:
    """Whether `host` names this machine's loopback or wildcard address."""
    return _local(host)


def listening_addresses(pgid: int) -> list[str] | None:
    """The TCP addresses (`host:port`, sorted) the live members of process group `pgid`
    listen on; None where /proc cannot tell."""
    if not os.path.isdir("/proc/net"):
        return None
    sockets = _listening()
    out: set[str] = set()
    for pid in group_members(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and (entry := sockets.get(int(link[8:-1]))) is not None:
                ip, port = entry
                out.add(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    return sorted(out)


def _holders(wanted: set[str], first: bool) -> list[int]:
    """Processes with an open fd whose /proc link is in `wanted` (only the first if `first`)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    found.append(int(entry))
                    break
            except OSError:
                continue
        if found and first:
            break
    return found


def _socket_owner(inodes: set[int]) -> int | None:
    found = _holders({f"socket:[{i}]" for i in inodes}, first=True)
    return found[0] if found else None


def pipe_holders(inode: int) -> list[int]:
    """Live processes other than this one holding pipe `inode` open (an upstream's output
    pipe: whoever still has it after its process group is gone left the group, e.g. by
    setsid, and is still ours)."""
    me = os.getpid()
    return [
        pid
        for pid in _holders({f"pipe:[{inode}]"}, first=False)
        if pid != me and (f := _stat_fields(pid)) is not None and f[0] not in (b"Z", b"X")
    ]


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = []
    text = " ".join(argv) or "?"
    return text if len(text) <= 120 else text[:117] + "..."


def port_holder(host: str, port: int, directory: Path | None = None) -> PortHolder | None:
    """Who listens on loopback/wildcard `port`, if `host` is local and anyone does; also
    whether it is an upstream of a llamaswap that is gone (its state file in `directory`,
    default `runtime_dir()`, still names the holder's process group)."""
    if not _local(host) or not port or not os.path.isdir("/proc/net"):
        return None
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    pid = _socket_owner(set(inodes))
    if pid is None:
        return PortHolder(port, None, "")
    found = _leftover_of(pid, directory if directory is not None else runtime_dir())
    config, pgid = found if found is not None else (None, None)
    return PortHolder(port, pid, command_of(pid), config, pgid)


def _leftover_of(pid: int, directory: Path) -> tuple[str, int] | None:
    """(config, pgid) when `pid`'s process group is recorded in a state file whose owner is
    gone, else None."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    pgid = int(fields[2])
    try:
        files = sorted(directory.glob("*.json"))
    except OSError:
        return None
    for path in files:
        try:
            data = json.loads(path.read_text())
            owner, owner_start = int(data["pid"]), data.get("start_time")
            entries = list(data.get("upstreams", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if is_process(owner, owner_start) or (owner_start is None and _pid_exists(owner)):
            continue  # its llamaswap lives: the upstream is in use, not left behind
        for entry in entries:
            try:
                recorded, started = int(entry["pgid"]), entry.get("start_time")
            except (KeyError, TypeError, ValueError):
                continue
            if recorded == pgid and ours(pgid, started):
                return str(data.get("config") or path), pgid
    return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# -- the state file ------------------------------------------------------------------------


def runtime_dir(configured: str = "") -> Path:
    """`configured`, else $XDG_RUNTIME_DIR/llamaswap, else <tmp>/llamaswap-UID."""
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "llamaswap"
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"llamaswap-{os.getuid()}"


def config_key(config_path: str | None) -> str:
    """The state file's name for a config: a hash of its real path (the built-in demo gets
    one per process: several demos may run side by side)."""
    if config_path is None:
        return f"demo-{os.getpid()}"
    real = os.path.realpath(config_path)
    return hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class AlreadyServing(Exception):
    """Another live llamaswap serves the same config."""


@dataclass(frozen=True, slots=True)
class Upstream:
    model: str
    pid: int
    pgid: int
    start_time: int | None
    port: int | None


class StateFile:
    """`<dir>/<key>.json` (what runs) and `<key>.lock` (held while its owner lives)."""

    def __init__(
        self, directory: Path, key: str, config: str | None, log: Callable[[str], None] = lambda line: None
    ) -> None:
        self.directory = directory
        self.path = directory / f"{key}.json"
        self.lock_path = directory / f"{key}.lock"
        self.config = config
        self.log = log  # told once when writes start failing (full disk, ...)
        self._lock_fd: int | None = None
        self._failing = False
        self.upstreams: dict[int, Upstream] = {}

    def acquire(self) -> list[str]:
        """Take the lock, stop an earlier instance's leftovers, write a fresh file. Returns
        what was cleaned up (one line each, for the log). Raises AlreadyServing or OSError."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                previous = self._read()
                who = f" (pid {previous.get('pid')})" if previous else ""
                raise AlreadyServing(
                    f"another llamaswap{who} is serving this config (state in {self.path}); stop it first"
                ) from None
            try:  # a watchdog may have removed the file between our open and our lock
                if os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock_fd = fd
        cleaned = self._clean(self._read())
        self.write()
        return cleaned

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _clean(previous: dict) -> list[str]:
        out = []
        groups = []
        for entry in previous.get("upstreams", []):
            try:
                pgid, started = int(entry["pgid"]), entry.get("start_time")
            except (KeyError, TypeError, ValueError):
                continue
            if pgid <= 1 or not ours(pgid, started) or not group_alive(pgid):
                continue
            groups.append((pgid, started))
            out.append(
                f"stopping leftover upstream of an earlier llamaswap (pid "
                f"{previous.get('pid')}): model {entry.get('model')!r}, process group "
                f"{pgid}, port {entry.get('port')}"
            )
        left = kill_groups(groups)
        out += [f"leftover process group {p} is still alive after SIGKILL" for p in left]
        return out

    def add(self, upstream: Upstream) -> None:
        self.upstreams[upstream.pgid] = upstream
        self.write()

    def remove(self, pgid: int) -> None:
        if self.upstreams.pop(pgid, None) is not None:
            self.write()

    def write(self) -> None:
        data = {
            "version": STATE_VERSION,
            "pid": os.getpid(),
            "start_time": start_time(os.getpid()),
            "config": self.config,
            "upstreams": [
                {"model": u.model, "pid": u.pid, "pgid": u.pgid, "start_time": u.start_time, "port": u.port}
                for u in self.upstreams.values()
            ],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError as exc:  # losing the file degrades leftover cleanup, never serving
            try:
                tmp.unlink()
            except OSError:
                pass
            if not self._failing:
                self._failing = True
                self.log(
                    f"cannot write the state file {self.path} ({exc}); until it can, the next llamaswap "
                    "cannot find what this one runs"
                )
        else:
            self._failing = False

    def release(self) -> None:
        """Clean exit: every upstream is stopped; remove the file and drop the lock."""
        for path in (self.path, self.lock_path):
            try:
                path.unlink()
            except OSError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- the watchdog --------------------------------------------------------------------------


class Watchdog:
    """llamaswap's side of the watchdog process: spawn it, tell it about groups."""

    def __init__(self, state_path: Path | None = None) -> None:
        self.state_path = state_path
        self.proc: subprocess.Popen | None = None
        self._write_fd: int | None = None
        self._groups: dict[int, int | None] = {}

    def start(self) -> None:
        read_fd, write_fd = os.pipe()
        argv = [sys.executable, "-m", "llamaswap.runtime.reaper", "watch", str(os.getpid())]
        if self.state_path is not None:
            argv.append(str(self.state_path))
        try:
            self.proc = subprocess.Popen(
                argv, stdin=read_fd, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True
            )
        finally:
            os.close(read_fd)
        self._write_fd = write_fd
        for pgid, started in self._groups.items():
            self._send(f"+{pgid} {started if started is not None else '-'}\n")

    def add(self, pgid: int, started: int | None) -> None:
        self._groups[pgid] = started
        self._send(f"+{pgid} {started if started is not None else '-'}\n")

    def remove(self, pgid: int) -> None:
        if pgid in self._groups:
            del self._groups[pgid]
            self._send(f"-{pgid}\n")

    def _send(self, line: str) -> None:
        if self._write_fd is None:
            return
        try:
            os.write(self._write_fd, line.encode())
        except OSError:  # the watchdog died: start another one with every live group
            self._close_pipe()
            if self.proc is not None:
                self.proc.poll()
            self.start()

    def _close_pipe(self) -> None:
        if self._write_fd is not None:
            try:
                os.close(self._write_fd)
            except OSError:
                pass
            self._write_fd = None

    def close(self, timeout: float = REAP_DEADLINE + 2.0) -> None:
        """Clean exit: close the pipe; the watchdog kills whatever is left and exits."""
        self._close_pipe()
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Supervision:
    """What `serve` hands every ModelProcess as its tracker: the state file and the watchdog
    together. `begin` runs before anything is spawned (it also cleans up leftovers)."""

    def __init__(self, state: StateFile | None, watchdog: Watchdog) -> None:
        self.state = state
        self.watchdog = watchdog

    @classmethod
    def begin(
        cls,
        config_path: str | None,
        configured_dir: str = "",
        log: Callable[[str], None] = lambda line: None,
        *,
        watchdog: bool = True,
    ) -> Supervision:
        """Raises AlreadyServing; a runtime dir that cannot be written only costs the
        leftover cleanup of a later start (logged). `watchdog=False` leaves the watchdog
        to `start_watchdog`, which must run before the first upstream is spawned (serve
        starts it once its listener is up: a fresh interpreter is not on the way to the
        first answer)."""
        real = os.path.realpath(config_path) if config_path is not None else None
        state: StateFile | None = StateFile(runtime_dir(configured_dir), config_key(config_path), real, log)
        try:
            for line in state.acquire():  # type: ignore[union-attr]
                log(line)
        except OSError as exc:
            log(f"no state file ({exc}); leftovers of this run could not be found by the next")
            state = None
        supervision = cls(state, Watchdog(state.path if state is not None else None))
        if watchdog:
            supervision.start_watchdog()
        return supervision

    def start_watchdog(self) -> None:
        if self.watchdog.proc is None:
            self.watchdog.start()

    def spawned(self, model: str, pid: int, port: int | None) -> None:
        started = start_time(pid)
        self.watchdog.add(pid, started)
        if self.state is not None:
            self.state.add(Upstream(model, pid, pid, started, port))

    def reaped(self, model: str, pid: int) -> None:
        self.watchdog.remove(pid)
        if self.state is not None:
            self.state.remove(pid)

    def close(self) -> None:
        """Clean exit, after every upstream stopped. The state goes first: a watchdog woken by
        its closed pipe then finds nothing of ours to remove (else it would wait for the lock
        this live process still holds)."""
        if self.state is not None:
            self.state.release()
        self.watchdog.close()


def watch(parent: int, state_path: str | None, fd: int = 0) -> int:
    """The watchdog's main loop (see the module docstring)."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    groups: dict[int, int | None] = {}
    partial = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        *lines, partial = (partial + data).split(b"\n")
        for line in lines:
            text = line.decode("ascii", "replace").strip()
            try:
                if text.startswith("+"):
                    announced, _, started = text[1:].partition(" ")
                    groups[int(announced)] = None if started in ("", "-") else int(started)
                elif text.startswith("-"):
                    groups.pop(int(text[1:]), None)
            except ValueError:
                continue
    # A half-written last line means llamaswap died mid-write: that group is still unknown
    # to us, but it was announced before its spawn returned only if complete; ignore it.
    left = kill_groups(groups.items())
    for pgid in left:
        try:
            print(f"llamaswap watchdog: process group {pgid} survived SIGKILL", file=sys.stderr)
        except OSError:
            pass
    if state_path:
        _remove_state_of(parent, Path(state_path))
    return 0


def _remove_state_of(parent: int, path: Path) -> None:
    """Remove the state file if `parent` (now gone) still owns it."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(data, dict) or data.get("pid") != parent:
        return
    try:
        path.unlink()
    except OSError:
        pass
    # The lock file too, unless a new llamaswap holds it already (then it is its lock).
    lock_path = path.with_suffix(".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return
    try:
        # The dead parent's lock may outlive its pipe by a moment: the kernel releases a
        # dying process's files one by one, so the pipe's end (which woke us) can close
        # before the lock's. Wait a little for it; a new llamaswap's lock stays.
        end = time.monotonic() + LOCK_RELEASE_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    return
                time.sleep(0.01)
        lock_path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "watch":
        return watch(int(argv[1]), argv[2] if len(argv) > 2 else None)
    print("usage: python -m llamaswap.runtime.reaper watch PARENT_PID [STATE_FILE]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
