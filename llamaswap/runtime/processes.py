"""The process supervisor: one upstream server per model, started, watched and stopped.

Theory of operation
-------------------
Each `ModelProcess` has ONE owner task, the only code that changes its state. Public methods
(`ensure_ready`, `stop`, `shutdown`) and the helper tasks (spawn, exit watcher, health poller)
never touch the state: they post messages into the owner's inbox and, for public methods,
await a future the owner resolves. Handlers run to completion without awaiting, so every
transition sees a consistent state and callers never race on "is it running?".

    stopped ──ensure_ready──▶ starting ──healthy──▶ ready
       ▲                         │  │                 │
       │      exited / spawn     │  │ stop, or        │ stop
       ├──── failed (StartError)─┘  │ health timeout  ▼
       │                            └──────────▶ stopping
       ├──────── exited by itself (crash) ◀───── ready
       └──────────────── exited ◀─────────────── stopping
    stopped ──shutdown──▶ shutdown (terminal)

Invariants:
- Every upstream runs in its own session and process group; the group id is the PID. Its
  leader gets SIGKILL from the kernel if llamaswap dies (parent-death signal); the rest of
  the group is the `tracker`'s business (runtime/reaper.py: watchdog and state file).
- Before a spawn, a local proxy port that something already listens on is a start error
  naming the holder (kind "port_in_use"): readiness must never be answered by someone
  else's process. A health answer counts only while our own leader is alive.
- Exit is detected on the leader's PID, not on its pipes, so a grandchild holding stdout
  open cannot hide an exit. When the leader is gone, whatever is left of its group is
  SIGKILLed, and the exit is reported only once no live process is left in the group
  (bounded by REAP_DEADLINE): no orphan survives its upstream, and "stopped" means gone.
  A process that left the group (setsid, a daemonizing fork) but still holds the group's
  output pipe is the upstream's too: once the group is gone it is stopped with its own group
  (SIGTERM, SIGKILL after ESCAPED_STOP_GRACE), so it cannot outlive llamaswap holding the
  model's port.
- Stopping = `cmdStop` (`${PID}` substituted) or SIGTERM to the group; SIGKILL to the group
  once the graceful timeout passes; the state reaches `stopped` only when the group is gone.
- A stop during `starting` aborts the start (`StartError`, kind "aborted"). A failed start
  (exited, health timeout) fails its waiters only once the state is back to `stopped`, so
  whoever starts a model it may not run with next finds its process group gone.
- A stop that finds the leader already dead (it exited by itself, and the exit was not
  handled yet), or whose leader dies of a signal the stop did not send, ends a crash: the
  `stopped` transition then carries `crashed=True`.
- `ensure_ready` during `stopping` waits the stop out, then starts a fresh process.
- Output (stdout and stderr merged) goes to a bounded `LogBuffer` (runtime/logs.py), one per model.
- No TTL here: the scheduler decides when to call `stop`.
- A hot reload gives a process a new spec (`respec`): at once, or, when what runs changes,
  once it is stopped (the running upstream is stopped with the spec it was started with).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from llamaswap.compiler.commands import CommandError, split_command
from llamaswap.runtime import reaper
from llamaswap.runtime.logs import LinePipe, LogBuffer

logger = logging.getLogger("llamaswap.process")

# The first health poll comes this soon after the spawn, then one every FAST_POLL_INTERVAL for
# FAST_POLL_WINDOW seconds, then one every POLL_INTERVAL, so a swap completes at most one
# interval after the upstream turns healthy.
FIRST_POLL_DELAY = 0.01
POLL_INTERVAL = 0.1
# Poll faster while a fast upstream is likely to become ready: a swap then ends within
# FAST_POLL_INTERVAL of the upstream turning healthy (a refused connect costs ~100 µs).
FAST_POLL_INTERVAL = 0.01
FAST_POLL_WINDOW = 3.0
POLL_TIMEOUT = 5.0
# Grace given to an upstream that failed its health check before it is killed.
FAILED_START_GRACE = 5.0
# How long to wait for the log pipe to drain after the leader exited (its group is killed
# by then; only a process that left the group can still hold the pipe). After
# ESCAPED_CHECK_AFTER of it, llamaswap looks for such a process and kills it.
LOG_DRAIN_TIMEOUT = 1.0
ESCAPED_CHECK_AFTER = 0.1
ESCAPED_STOP_GRACE = 5.0  # SIGTERM to such a process, then SIGKILL after this long
START_ERROR_LINES = 10
# How long an exit waits for the rest of a SIGKILLed process group to be gone.
REAP_DEADLINE = reaper.REAP_DEADLINE


# A model that takes longer than this to become ready gets a progress line, then one every
# PROGRESS_EVERY seconds.
PROGRESS_AFTER = 5.0
PROGRESS_EVERY = 10.0
# A stop that has not ended this long after its signal says so once (with when SIGKILL
# follows), when the graceful stop may last at least twice as long.
STOP_NOTICE_AFTER = 5.0


def _log_transition(model: str, old: ProcessState, new: ProcessState, seconds: float, detail: str) -> None:
    """One info line per start, ready and stop, with how long the step took. A failed start or
    a crash has its own warning where it is detected."""
    extra = {"model": model, "event": str(new), "from": str(old), "seconds": round(seconds, 3)}
    if new is ProcessState.STARTING:
        logger.info("%s: starting: %s", model, detail, extra=extra)
    elif new is ProcessState.READY:
        logger.info("%s: ready in %.2fs", model, seconds, extra=extra)
    elif new is ProcessState.STOPPING:
        logger.info(
            "%s: stopping after %.1fs %s%s",
            model,
            seconds,
            "starting" if old is ProcessState.STARTING else "ready",
            f" ({detail})" if detail else "",
            extra=extra,
        )
    elif new is ProcessState.STOPPED and old is ProcessState.STOPPING:
        how = detail.removeprefix("stopped (").removesuffix(")") if detail.startswith("stopped (") else detail
        logger.info("%s: stopped in %.2fs%s", model, seconds, f" ({how})" if how else "", extra=extra)
    else:
        logger.debug("%s: %s -> %s %s", model, old, new, detail, extra=extra)


class ProcessState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SHUTDOWN = "shutdown"


S = ProcessState
TRANSITIONS: frozenset[tuple[ProcessState, ProcessState]] = frozenset(
    {
        (S.STOPPED, S.STARTING),
        (S.STARTING, S.READY),
        (S.STARTING, S.STOPPED),  # spawn failed, or exited before it was healthy
        (S.STARTING, S.STOPPING),  # stop arrived (abort) or health check timed out
        (S.READY, S.STOPPING),
        (S.READY, S.STOPPED),  # crashed: exited by itself
        (S.STOPPING, S.STOPPED),
        (S.STOPPED, S.SHUTDOWN),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSpec:
    """What to run for one model. Macros are expanded and `${PORT}` is substituted;
    `cmd_stop` may still hold `${PID}`."""

    model: str
    cmd: str
    proxy: str
    cmd_stop: str = ""
    env: tuple[str, ...] = ()
    check_endpoint: str = "/health"
    health_check_timeout: float = 120.0
    unload_timeout: float = 10.0
    log_lines: int = 1000
    log_bytes: int = 256 * 1024

    @property
    def health_url(self) -> str | None:
        """The readiness URL, or None when `checkEndpoint` is `none` or empty."""
        endpoint = self.check_endpoint.strip()
        if not endpoint or endpoint.lower() == "none":
            return None
        return self.proxy.rstrip("/") + "/" + endpoint.lstrip("/")


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A transition, as listeners receive it. `at` is `time.monotonic()` at the transition.

    `old=ready, new=stopped` happens only when the upstream exited by itself (a crash);
    a requested stop always goes through `stopping`. `crashed` is True on that transition
    and on `stopping -> stopped` when the stop found the upstream already dead."""

    model: str
    old: ProcessState
    new: ProcessState
    at: float
    pid: int | None
    detail: str
    crashed: bool = False


class ProcessTracker(Protocol):
    """Told about every upstream process group (runtime/reaper.py keeps the watchdog and
    the state file). Called from the event loop; must be quick and must not raise."""

    def spawned(self, model: str, pid: int, port: int | None) -> None: ...

    def reaped(self, model: str, pid: int) -> None: ...


StateListener = Callable[[StateChanged], None]


class StartError(Exception):
    """`ensure_ready` failed. `kind` is stable: command, spawn, exited, health_timeout,
    aborted, shutdown; the message is for people."""

    def __init__(self, message: str, *, model: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.kind = kind


# --- the supervisor ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DevicePlacement:
    """Where the scheduler placed a model (resources): device names and the ids the process
    environment names them by (`index:` in `resources`, else the device's position)."""

    devices: tuple[str, ...]
    ids: tuple[str, ...]


VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def with_devices(text: str, placement: DevicePlacement | None) -> str:
    """`${GPUS}` (every id, comma-separated) and `${GPU}` (the first) substituted; the
    compiler allows them only in models with resources, so they always have a value here."""
    if placement is None or "${GPU" not in text:
        return text
    ids = placement.ids
    return text.replace("${GPUS}", ",".join(ids)).replace("${GPU}", ids[0] if ids else "")


def device_environment(spec: ProcessSpec, placement: DevicePlacement | None) -> dict[str, str]:
    """`CUDA_VISIBLE_DEVICES` and `HIP_VISIBLE_DEVICES` for a placed model, unless its cmd or
    env names either (then the model chose its devices itself), or it is placed nowhere."""
    if placement is None or not placement.ids:
        return {}
    mentioned = spec.cmd + "\n" + "\n".join(spec.env)
    if any(name in mentioned for name in VISIBLE_DEVICES):
        return {}
    value = ",".join(placement.ids)
    return {name: value for name in VISIBLE_DEVICES}


@dataclass(eq=False, slots=True)
class _Run:
    """One spawn attempt. Fields other than `exited`/`returncode` are set by the owner."""

    first_log_seq: int
    placement: DevicePlacement | None = None  # its devices, fixed for the run
    proc: asyncio.subprocess.Process | None = None
    pid: int | None = None
    spawned_at: float = 0.0
    log_done: asyncio.Event | None = None
    log_transport: asyncio.BaseTransport | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    returncode: int | None = None
    stop_requested: bool = False
    kill_at: float | None = None
    kill_handle: asyncio.TimerHandle | None = None
    notice_handle: asyncio.TimerHandle | None = None  # the "still stopping" line
    health_task: asyncio.Task | None = None
    crashed: bool = False  # the leader was already dead when the stop came
    killed: bool = False  # we sent the group SIGKILL (graceful stop timed out)


# Messages to the owner. Commands carry a future to resolve; facts come from helper tasks.
@dataclass(slots=True)
class _EnsureReady:
    reply: asyncio.Future
    placement: DevicePlacement | None = None


@dataclass(slots=True)
class _Stop:
    timeout: float
    reason: str
    reply: asyncio.Future
    shutdown: bool = False


@dataclass(slots=True)
class _Respec:
    spec: ProcessSpec
    at_next_stop: bool


@dataclass(slots=True)
class _Spawned:
    run: _Run
    proc: asyncio.subprocess.Process
    at: float
    log_done: asyncio.Event
    log_transport: asyncio.BaseTransport


@dataclass(slots=True)
class _SpawnFailed:
    run: _Run
    error: StartError


@dataclass(slots=True)
class _Healthy:
    run: _Run


@dataclass(slots=True)
class _HealthTimedOut:
    run: _Run
    listening: list[str] | None = None  # where the run's group listens (None: unknown)


@dataclass(slots=True)
class _Exited:
    run: _Run
    returncode: int


def _leader_exited(run: _Run) -> bool:
    """Whether the leader has exited, even if the exit watcher has not reported it yet
    (a zombie counts: waitid with WNOWAIT looks without reaping)."""
    if run.returncode is not None:
        return True
    if run.pid is None:
        return False
    try:
        return os.waitid(os.P_PID, run.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped
    except OSError:
        return False


def _listening_elsewhere(pgid: int, proxy: str) -> list[str] | None:
    """Where group `pgid` listens, when nothing listens on the proxy's local port (else None:
    the port is served, by the upstream or e.g. docker's proxy, or the proxy is remote)."""
    host, port = _port_of(proxy)
    if port is None or not reaper.is_local(host) or reaper.listening_on(port):
        return None
    return reaper.listening_addresses(pgid)


def _listening_hint(proxy: str, listening: list[str] | None) -> str:
    """What a timed-out health check adds about where the upstream listens (see
    `_listening_elsewhere`); nothing when its port is served or that cannot be told."""
    port = _port_of(proxy)[1]
    if listening is None or port is None:
        return ""
    if not listening:
        return f" (nothing listened on port {port}: still loading, or does cmd bind that port?)"
    return (
        f" (it listens on {', '.join(listening)}, not on the proxy's port {port}: does cmd bind that port?)"
    )


def _port_of(proxy: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(proxy)
        port = parts.port
    except ValueError:
        return "", None
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.hostname or "", port


# A cmd whose program is this bare name runs the llamaswap that serves.
OWN_PROGRAM = "llamaswap"


def own_program(argv: list[str]) -> list[str]:
    """`argv` with a bare `llamaswap` program replaced by this interpreter's `-m llamaswap`
    (a llamaswap extension): `llamaswap fake-upstream ...` in a config then runs the serving
    version, from a virtualenv that is not activated and whatever the upstream's PATH holds."""
    if argv and argv[0] == OWN_PROGRAM:
        return [sys.executable, "-m", "llamaswap", *argv[1:]]
    return argv


async def _set_within(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def _killpg(pgid: int | None, sig: int) -> bool:
    """Signal a process group; False when it is already gone."""
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def spawn_failure(program: str, exc: OSError, what: str = "unable to start upstream command") -> str:
    """Why `program` (a cmd's first word) could not be started, naming it."""
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in program else " on PATH"
        return f"{what}: {program!r} not found{where}"
    if isinstance(exc, PermissionError):
        return f"{what}: {program!r}: permission denied (is it executable?)"
    return f"{what}: {program!r}: {exc.strerror or exc}"


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"exit code {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"exit code {returncode}"


class ModelProcess:
    """Supervises the upstream of one model. See the module docstring for the rules."""

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        on_state_change: StateListener | None = None,
        session: aiohttp.ClientSession | None = None,
        log: LogBuffer | None = None,
        tracker: ProcessTracker | None = None,
    ) -> None:
        self.spec = spec
        self._tracker = tracker
        self.log = log if log is not None else LogBuffer(spec.log_lines, spec.log_bytes)
        self._listeners: list[StateListener] = [on_state_change] if on_state_change else []
        self._session = session
        self._own_session = False
        self._state = ProcessState.STOPPED
        self._state_since = time.monotonic()
        self._run: _Run | None = None
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._owner: asyncio.Task | None = None
        self._helpers: set[asyncio.Task] = set()
        self._start_waiters: list[asyncio.Future] = []
        self._restart_waiters: list[asyncio.Future] = []  # ensure_ready during stopping
        self._stop_waiters: list[asyncio.Future] = []
        self._failed_start: StartError | None = None  # given to the start waiters once stopped
        self._shutting_down = False
        self._next_spec: ProcessSpec | None = None  # a reload's spec, taken at the next stop
        self._next_placement: DevicePlacement | None = None  # for the next start

    # -- read-only views (for /running, metrics, tests; never to decide a start or stop) --

    @property
    def state(self) -> ProcessState:
        return self._state

    @property
    def state_since(self) -> float:
        """`time.monotonic()` when the current state was entered."""
        return self._state_since

    @property
    def pid(self) -> int | None:
        run = self._run
        return run.pid if run is not None and run.returncode is None else None

    def log_history(self) -> list[str]:
        return self.log.history()

    def subscribe_log(self, listener: Callable[[str], None]) -> Callable[[], None]:
        return self.log.subscribe(listener)

    def add_listener(self, listener: StateListener) -> Callable[[], None]:
        """Call `listener(StateChanged)` synchronously on every transition (from the owner
        task; keep it short and non-blocking). Returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- commands ------------------------------------------------------------------------

    @property
    def placement(self) -> DevicePlacement | None:
        """The devices of the current run (resources), else None."""
        run = self._run
        return run.placement if run is not None else None

    async def ensure_ready(self, placement: DevicePlacement | None = None) -> None:
        """Return once the upstream is ready, starting it if needed (on `placement`'s devices,
        when given); raise StartError."""
        await self._command(lambda fut: _EnsureReady(fut, placement))

    async def stop(self, timeout: float | None = None, reason: str = "stop") -> None:
        """Stop gracefully, SIGKILL after `timeout` (default: the spec's unload timeout),
        and return once the process is gone. A no-op when stopped."""
        t = self.spec.unload_timeout if timeout is None else timeout
        if self._state is ProcessState.SHUTDOWN:
            return
        await self._command(lambda fut: _Stop(t, reason, fut))

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop (as `stop`) and enter the terminal `shutdown` state."""
        t = self.spec.unload_timeout if timeout is None else timeout
        if self._state is not ProcessState.SHUTDOWN:
            await self._command(lambda fut: _Stop(t, "shutdown", fut, shutdown=True))
        if self._owner is not None:
            await asyncio.shield(self._owner)

    def respec(self, spec: ProcessSpec, at_next_stop: bool = False) -> None:
        """Use `spec` from now on (a hot reload). `at_next_stop`: what runs changes, so keep
        the current spec until the process is stopped (now, if it is stopped)."""
        if spec.model != self.spec.model:
            raise ValueError(f"respec of {self.spec.model!r} with a spec for {spec.model!r}")
        if self._owner is None:  # never started: nobody else reads the spec
            self.spec = spec
            return
        self._inbox.put_nowait(_Respec(spec, at_next_stop))

    async def _command(self, make: Callable[[asyncio.Future], object]) -> None:
        # SHUTDOWN is terminal, so reading it here cannot race with the owner.
        if self._state is ProcessState.SHUTDOWN:
            raise StartError("shutdown", model=self.spec.model, kind="shutdown")
        loop = asyncio.get_running_loop()
        if self._owner is None:
            self._owner = loop.create_task(self._own(), name=f"process:{self.spec.model}")
        fut = loop.create_future()
        self._inbox.put_nowait(make(fut))
        await fut

    # -- the owner -----------------------------------------------------------------------

    async def _own(self) -> None:
        handlers: dict[type, Callable[[Any], None]] = {
            _EnsureReady: self._on_ensure_ready,
            _Stop: self._on_stop,
            _Respec: self._on_respec,
            _Spawned: self._on_spawned,
            _SpawnFailed: self._on_spawn_failed,
            _Healthy: self._on_healthy,
            _HealthTimedOut: self._on_health_timed_out,
            _Exited: self._on_exited,
        }
        try:
            while self._state is not ProcessState.SHUTDOWN:
                msg = await self._inbox.get()
                try:
                    handlers[type(msg)](msg)
                except Exception:  # a bug here must not leave every caller hanging
                    logger.exception("%s: error handling %s", self.spec.model, msg)
        finally:
            # Normally the run is over by now; if the owner was cancelled instead (the loop
            # torn down without shutdown), the upstream must not outlive us.
            if self._run is not None and self._run.returncode is None:
                _killpg(self._run.pid, signal.SIGKILL)
            while not self._inbox.empty():
                msg = self._inbox.get_nowait()
                reply = getattr(msg, "reply", None)
                if isinstance(msg, _EnsureReady):
                    self._fail([msg.reply], StartError("shutdown", model=self.spec.model, kind="shutdown"))
                elif reply is not None and not reply.done():
                    reply.set_result(None)
            for task in tuple(self._helpers):
                task.cancel()
            if self._helpers:
                await asyncio.gather(*self._helpers, return_exceptions=True)
            if self._own_session and self._session is not None:
                await self._session.close()

    def _set_state(
        self, new: ProcessState, detail: str = "", pid: int | None = None, crashed: bool = False
    ) -> None:
        old = self._state
        assert (old, new) in TRANSITIONS, f"{self.spec.model}: {old} -> {new}"
        since = self._state_since
        self._state = new
        self._state_since = time.monotonic()
        event = StateChanged(
            self.spec.model,
            old,
            new,
            self._state_since,
            pid if pid is not None else self.pid,
            detail,
            crashed,
        )
        _log_transition(self.spec.model, old, new, self._state_since - since, detail)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("%s: state listener failed", self.spec.model)

    @staticmethod
    def _resolve(waiters: list[asyncio.Future]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()

    @staticmethod
    def _fail(waiters: list[asyncio.Future], error: StartError) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_exception(error)
        waiters.clear()

    def _error(self, message: str, kind: str) -> StartError:
        return StartError(message, model=self.spec.model, kind=kind)

    def _helper(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)
        return task

    # commands

    def _on_ensure_ready(self, msg: _EnsureReady) -> None:
        state = self._state
        if state is ProcessState.READY:
            self._resolve([msg.reply])
        elif state is ProcessState.STARTING:
            self._start_waiters.append(msg.reply)
        elif state is ProcessState.STOPPING:
            if self._shutting_down:
                self._fail([msg.reply], self._error("shutdown", "shutdown"))
            else:
                self._restart_waiters.append(msg.reply)
                self._next_placement = msg.placement
        else:  # STOPPED
            self._start_waiters.append(msg.reply)
            self._next_placement = msg.placement
            self._begin_start()

    def _on_stop(self, msg: _Stop) -> None:
        if msg.shutdown and not self._shutting_down:
            self._shutting_down = True
            self._fail(self._restart_waiters, self._error("shutdown", "shutdown"))
        state = self._state
        if state is ProcessState.STOPPED:
            if msg.shutdown:
                self._set_state(ProcessState.SHUTDOWN)
            self._resolve([msg.reply])
            return
        self._stop_waiters.append(msg.reply)
        if state is ProcessState.STARTING:
            kind = "shutdown" if msg.shutdown else "aborted"
            self._fail(self._start_waiters, self._error(kind, kind))
        self._begin_stop(msg.timeout, msg.reason)

    def _on_respec(self, msg: _Respec) -> None:
        if msg.at_next_stop and self._state not in (ProcessState.STOPPED, ProcessState.SHUTDOWN):
            self._next_spec = msg.spec
        else:
            self.spec = msg.spec
            self._next_spec = None

    # facts

    def _on_spawned(self, msg: _Spawned) -> None:
        run = msg.run
        run.proc, run.pid, run.spawned_at = msg.proc, msg.proc.pid, msg.at
        run.log_done, run.log_transport = msg.log_done, msg.log_transport
        self._helper(self._watch(run))
        # The run is still current: a run ends only through its own exit or spawn failure.
        if run.stop_requested:  # a stop came while spawning
            self._send_stop_signal(run)
            self._schedule_kill(run)
        elif self.spec.health_url is None:
            self._become_ready(run)
        else:
            run.health_task = self._helper(self._check_health(run, self.spec.health_url))

    def _on_spawn_failed(self, msg: _SpawnFailed) -> None:
        if msg.run is not self._run:
            return
        logger.warning("%s: %s", self.spec.model, msg.error)
        self._fail(self._start_waiters, msg.error)
        self._enter_stopped(str(msg.error))

    def _on_healthy(self, msg: _Healthy) -> None:
        # Our own leader must still be alive: an answer from a process that took the port
        # after ours died is no readiness (its exit is on the way and fails the start).
        if msg.run is self._run and self._state is ProcessState.STARTING and not _leader_exited(msg.run):
            self._become_ready(msg.run)

    def _on_health_timed_out(self, msg: _HealthTimedOut) -> None:
        if msg.run is not self._run or self._state is not ProcessState.STARTING:
            return
        model = self.spec.model
        error = self._error(
            f"health check timed out after {self.spec.health_check_timeout:g}s: model {model!r} never "
            f"answered 200 at {self.spec.health_url}{_listening_hint(self.spec.proxy, msg.listening)}; "
            f"its output is in /logs/stream/{model}",
            "health_timeout",
        )
        logger.warning("%s: %s", self.spec.model, error)
        # The waiters hear of it once the process group is gone (see _enter_stopped).
        self._failed_start = error
        self._begin_stop(FAILED_START_GRACE, str(error))

    def _on_exited(self, msg: _Exited) -> None:
        run = msg.run
        if run is not self._run:
            return
        how = describe_exit(msg.returncode)
        if self._state is ProcessState.STARTING:
            lines = self.log.lines_since(run.first_log_seq)[-START_ERROR_LINES:]
            error = self._error(
                f"upstream command exited prematurely ({how}): "
                + ("\n".join(lines) if lines else "(no output)"),
                "exited",
            )
            logger.warning("%s: %s", self.spec.model, error)
            self._fail(self._start_waiters, error)
            self._enter_stopped(str(error))
        elif self._state is ProcessState.READY:
            logger.warning("%s: upstream process exited unexpectedly (%s)", self.spec.model, how)
            self._enter_stopped(f"upstream process exited unexpectedly ({how})", crashed=True)
        elif run.crashed or self._died_of_its_own(run, msg.returncode):  # STOPPING
            logger.warning(
                "%s: upstream process exited unexpectedly (%s) before its stop", self.spec.model, how
            )
            self._enter_stopped(f"upstream process exited unexpectedly ({how})", crashed=True)
        else:  # STOPPING
            self._enter_stopped(f"stopped ({how})")

    def _died_of_its_own(self, run: _Run, returncode: int) -> bool:
        """During a stop: killed by a signal that the stop did not send (SIGKILL from the
        OOM killer, SIGSEGV, …). Unknowable with a cmdStop, which may send anything."""
        if returncode >= 0 or self.spec.cmd_stop.strip():
            return False
        sig = -returncode
        return sig != signal.SIGTERM and not (sig == signal.SIGKILL and run.killed)

    # transitions

    def _begin_start(self) -> None:
        placement = self._next_placement
        try:
            argv = own_program(split_command(with_devices(self.spec.cmd, placement)))
        except CommandError as exc:
            why = (
                f"model {self.spec.model} has no cmd: there is nothing to start"
                if str(exc) == "empty command"
                else f"model {self.spec.model}: {exc}"
            )
            self._fail(self._start_waiters, self._error(why, "command"))
            return
        run = self._run = _Run(first_log_seq=self.log.next_seq, placement=placement)
        self._set_state(ProcessState.STARTING, shlex.join(argv))
        self._helper(self._spawn_run(run, argv))

    def _become_ready(self, run: _Run) -> None:
        elapsed = asyncio.get_running_loop().time() - run.spawned_at
        self._set_state(ProcessState.READY, f"ready after {elapsed:.2f}s")
        self._resolve(self._start_waiters)

    def _begin_stop(self, timeout: float, reason: str) -> None:
        run = self._run
        assert run is not None
        first = not run.stop_requested
        run.stop_requested = True
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        # A later stop with a shorter timeout (e.g. shutdown during an unload) tightens it.
        if run.kill_at is None or deadline < run.kill_at:
            run.kill_at = deadline
            if run.proc is not None:
                self._schedule_kill(run)
        if first:
            if run.health_task is not None:
                run.health_task.cancel()
            run.crashed = self._state is ProcessState.READY and _leader_exited(run)
            self._set_state(ProcessState.STOPPING, reason)
            if run.proc is not None:
                self._send_stop_signal(run)
                loop = asyncio.get_running_loop()
                if run.kill_at - loop.time() >= 2 * STOP_NOTICE_AFTER:
                    run.notice_handle = loop.call_later(STOP_NOTICE_AFTER, self._still_stopping, run)

    def _enter_stopped(self, detail: str, crashed: bool = False) -> None:
        run, self._run = self._run, None
        if run is not None:
            if run.kill_handle is not None:
                run.kill_handle.cancel()
            if run.notice_handle is not None:
                run.notice_handle.cancel()
            if run.health_task is not None:
                run.health_task.cancel()
        if self._next_spec is not None:
            self.spec, self._next_spec = self._next_spec, None
        self._set_state(ProcessState.STOPPED, detail, pid=run.pid if run else None, crashed=crashed)
        failed, self._failed_start = self._failed_start, None
        if failed is not None:
            self._fail(self._start_waiters, failed)
        self._resolve(self._stop_waiters)
        if self._shutting_down:
            self._set_state(ProcessState.SHUTDOWN)
        elif self._restart_waiters:
            self._start_waiters, self._restart_waiters = self._restart_waiters, []
            self._begin_start()

    def _schedule_kill(self, run: _Run) -> None:
        if run.kill_handle is not None:
            run.kill_handle.cancel()
        assert run.kill_at is not None
        run.kill_handle = asyncio.get_running_loop().call_at(run.kill_at, self._kill, run)

    def _still_stopping(self, run: _Run) -> None:
        if run.returncode is not None or run.killed or run.kill_at is None:
            return
        left = run.kill_at - asyncio.get_running_loop().time()
        how = "cmdStop" if self.spec.cmd_stop.strip() else "SIGTERM"
        logger.info(
            "%s: still running %gs after %s; waiting for it to exit, SIGKILL in %.0fs",
            self.spec.model,
            STOP_NOTICE_AFTER,
            how,
            max(0.0, left),
        )

    def _kill(self, run: _Run) -> None:
        run.killed = True
        if run.returncode is None and _killpg(run.pid, signal.SIGKILL):
            logger.warning("%s: graceful stop timed out, killed process group %s", self.spec.model, run.pid)

    def _send_stop_signal(self, run: _Run) -> None:
        if self.spec.cmd_stop.strip():
            self._helper(self._run_cmd_stop(run))
        else:
            _killpg(run.pid, signal.SIGTERM)

    # -- helper tasks: they do I/O and report facts, never touching state ----------------

    def _environment(self, run: _Run) -> dict[str, str]:
        env = dict(os.environ)
        env.update(device_environment(self.spec, run.placement))
        for entry in self.spec.env:
            key, sep, value = entry.partition("=")
            if sep and key:
                env[key] = with_devices(value, run.placement)
            else:
                logger.warning("%s: ignoring env entry %r (expected K=V)", self.spec.model, entry)
        return env

    async def _spawn(self, argv: list[str], env: dict[str, str]):
        """Start `argv` in a new session with stdout+stderr feeding the model's log."""
        loop = asyncio.get_running_loop()
        # Our own pipe rather than asyncio's PIPE: asyncio's wait() (3.11) also waits for
        # the pipes to close, which a grandchild can hold open forever.
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                env=env,
                start_new_session=True,
                preexec_fn=reaper.pdeathsig_preexec(),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        done = asyncio.Event()
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: LinePipe(self.log.append, done, self.log.max_line),
                os.fdopen(read_fd, "rb", buffering=0),
            )
        except BaseException:
            _killpg(proc.pid, signal.SIGKILL)
            raise
        return proc, done, transport

    async def _spawn_run(self, run: _Run, argv: list[str]) -> None:
        loop = asyncio.get_running_loop()
        host, port = _port_of(self.spec.proxy)
        holder = reaper.port_holder(host, port) if port is not None else None
        if holder is not None:
            self._inbox.put_nowait(
                _SpawnFailed(run, self._error(f"cannot start upstream: {holder.describe()}", "port_in_use"))
            )
            return
        try:
            proc, done, transport = await self._spawn(argv, self._environment(run))
        except OSError as exc:
            self._inbox.put_nowait(_SpawnFailed(run, self._error(spawn_failure(argv[0], exc), "spawn")))
            return
        if self._tracker is not None:
            try:
                self._tracker.spawned(self.spec.model, proc.pid, port)
            except Exception:
                logger.exception("%s: process tracker failed", self.spec.model)
        self._inbox.put_nowait(_Spawned(run, proc, loop.time(), done, transport))

    async def _watch(self, run: _Run) -> None:
        assert run.proc is not None and run.log_done is not None
        returncode = await run.proc.wait()
        run.returncode = returncode
        run.exited.set()
        await self._reap_group(run)
        if not await _set_within(run.log_done, ESCAPED_CHECK_AFTER):
            await self._reap_escaped(run)
            if not await _set_within(run.log_done, LOG_DRAIN_TIMEOUT) and run.log_transport is not None:
                run.log_transport.close()
        self._inbox.put_nowait(_Exited(run, returncode))

    async def _reap_escaped(self, run: _Run) -> None:
        """SIGKILL the processes that left the run's process group but still hold its output
        pipe (and the groups they lead): SIGTERM, SIGKILL after ESCAPED_STOP_GRACE; wait until
        they are gone, at most REAP_DEADLINE more."""
        pipe = run.log_transport.get_extra_info("pipe") if run.log_transport is not None else None
        if pipe is None:
            return
        try:
            inode = os.fstat(pipe.fileno()).st_ino
        except (OSError, ValueError):
            return
        holders = {pid: reaper.start_time(pid) for pid in await asyncio.to_thread(reaper.pipe_holders, inode)}
        if not holders:
            return
        logger.warning(
            "%s: %s left process group %s but still held its output; stopping %s",
            self.spec.model,
            ", ".join(f"pid {pid} ({reaper.command_of(pid)})" for pid in holders),
            run.pid,
            "it" if len(holders) == 1 else "them",
        )
        own_group = os.getpgrp()
        loop = asyncio.get_running_loop()
        kill_at = loop.time() + ESCAPED_STOP_GRACE
        deadline = kill_at + REAP_DEADLINE
        sent: int | None = None
        delay = 0.002
        while live := [pid for pid, started in holders.items() if reaper.is_process(pid, started)]:
            now = loop.time()
            if now >= deadline:
                logger.error(
                    "%s: pids %s still alive %.0fs after SIGKILL", self.spec.model, live, REAP_DEADLINE
                )
                return
            sig = signal.SIGKILL if now >= kill_at else signal.SIGTERM
            if sig != sent or sig == signal.SIGKILL:  # SIGTERM once, then SIGKILL until gone
                sent = sig
                for pid in live:
                    try:
                        if os.getpgid(pid) == pid != own_group:
                            os.killpg(pid, sig)
                        else:
                            os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _reap_group(self, run: _Run) -> None:
        """SIGKILL whatever the leader left behind in its group, and wait until none of it
        is alive (re-sending SIGKILL), at most REAP_DEADLINE."""
        pgid = run.pid
        assert pgid is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REAP_DEADLINE
        delay = 0.002
        while _killpg(pgid, signal.SIGKILL) and reaper.group_alive(pgid):
            if loop.time() >= deadline:
                logger.error(
                    "%s: process group %s still has live members %s %.0fs after "
                    "SIGKILL; reporting the exit anyway",
                    self.spec.model,
                    pgid,
                    reaper.group_members(pgid),
                    REAP_DEADLINE,
                )
                return  # still tracked: the watchdog tries again when llamaswap exits
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if self._tracker is not None:
            try:
                self._tracker.reaped(self.spec.model, pgid)
            except Exception:
                logger.exception("%s: process tracker failed", self.spec.model)

    async def _check_health(self, run: _Run, url: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = run.spawned_at + self.spec.health_check_timeout
        session = self._get_session()
        progress_at = run.spawned_at + PROGRESS_AFTER
        await asyncio.sleep(FIRST_POLL_DELAY)
        while not run.exited.is_set():
            began = loop.time()
            if progress_at <= began < deadline:
                logger.info(
                    "%s: still loading after %.0fs (waiting for %s to answer 200; giving up after %gs)",
                    self.spec.model,
                    began - run.spawned_at,
                    url,
                    self.spec.health_check_timeout,
                    extra={
                        "model": self.spec.model,
                        "event": "loading",
                        "seconds": round(began - run.spawned_at, 1),
                    },
                )
                progress_at += PROGRESS_EVERY
            if began >= deadline:
                assert run.pid is not None
                listening = await asyncio.to_thread(_listening_elsewhere, run.pid, self.spec.proxy)
                self._inbox.put_nowait(_HealthTimedOut(run, listening))
                return
            try:
                timeout = aiohttp.ClientTimeout(total=min(deadline - began, POLL_TIMEOUT))
                async with session.get(url, timeout=timeout, allow_redirects=False) as resp:
                    await resp.read()
                    if resp.status == 200:
                        self._inbox.put_nowait(_Healthy(run))
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            interval = FAST_POLL_INTERVAL if began - run.spawned_at < FAST_POLL_WINDOW else POLL_INTERVAL
            await asyncio.sleep(max(0.0, min(began + interval, deadline) - loop.time()))

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _run_cmd_stop(self, run: _Run) -> None:
        command = with_devices(self.spec.cmd_stop.replace("${PID}", str(run.pid)), run.placement)
        argv: list[str] = []
        try:
            argv = split_command(command)
            proc, _, _ = await self._spawn(argv, self._environment(run))
        except (CommandError, OSError) as exc:
            why = spawn_failure(argv[0], exc, "cmdStop failed") if argv and isinstance(exc, OSError) else None
            logger.warning("%s: %s; sending SIGTERM", self.spec.model, why or f"cmdStop failed ({exc})")
            _killpg(run.pid, signal.SIGTERM)
            return
        try:
            code = await proc.wait()
        except asyncio.CancelledError:  # only at shutdown: leave nothing behind
            _killpg(proc.pid, signal.SIGKILL)
            raise
        if code != 0 and run.returncode is None:
            # (llama-swap logs this too; the stop goes on: SIGKILL when its timeout ends)
            left = (
                ""
                if run.kill_at is None
                else f", SIGKILL in {max(0.0, run.kill_at - asyncio.get_running_loop().time()):.0f}s"
            )
            logger.warning(
                "%s: cmdStop failed (%s; its output is in /logs/stream/%s); waiting for the process to exit%s",
                self.spec.model,
                describe_exit(code),
                self.spec.model,
                left,
            )
