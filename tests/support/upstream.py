"""Real-process helpers for tests of the edge: the fake upstream as a subprocess, free ports,
waiting on conditions under a deadline, and checking that a PID is gone.

No fixed sleeps anywhere: wait for a condition, polling under a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

FAKE_UPSTREAM = (sys.executable, "-m", "llamaswap", "fake-upstream")
_LISTENING = re.compile(r"^listening on (http://(\S+):(\d+))$")
# urllib honours *_proxy variables; tests talk to 127.0.0.1 only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for a ProcessSpec's `${PORT}`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fake_upstream_args(
    port: int,
    *,
    name: str = "fake",
    startup_delay: float = 0.0,
    fail_health: bool = False,
    exit_after: float | None = None,
    token_delay: float = 0.0,
    host: str = "127.0.0.1",
) -> list[str]:
    args = [*FAKE_UPSTREAM, "--port", str(port), "--host", host, "--name", name]
    if startup_delay:
        args += ["--startup-delay", str(startup_delay)]
    if fail_health:
        args.append("--fail-health")
    if exit_after is not None:
        args += ["--exit-after", str(exit_after)]
    if token_delay:
        args += ["--token-delay", str(token_delay)]
    return args


def fake_upstream_cmd(port: int, **options: Any) -> str:
    """The fake upstream as a config `cmd` string (port already substituted)."""
    return shlex.join(fake_upstream_args(port, **options))


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, message: str = "condition"
) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def wait_until_async(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, message: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def run_async(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run a coroutine to completion from a sync test, bounded by `timeout`."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def pid_alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone (nobody may reap it in a container)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    # The state follows the parenthesised command name, which may itself contain ')'.
    return stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> Response:
    """A blocking HTTP request that returns error statuses instead of raising."""
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, dict(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers.items()), err.read())


@dataclass
class FakeUpstream:
    """A running `llamaswap fake-upstream` subprocess."""

    proc: subprocess.Popen
    name: str
    url: str
    port: int
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, **kw: Any) -> Response:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return http("POST", self.url + path, body, **kw)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_fake_upstream(
    *,
    name: str = "fake",
    startup_delay: float = 0.0,
    fail_health: bool = False,
    exit_after: float | None = None,
    token_delay: float = 0.0,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 15.0,
) -> FakeUpstream:
    """Start the fake upstream on `port` (0: any) and return once it printed its address."""
    args = fake_upstream_args(
        port,
        name=name,
        startup_delay=startup_delay,
        fail_health=fail_health,
        exit_after=exit_after,
        token_delay=token_delay,
        host=host,
    )
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"fake upstream printed no address in {timeout}s: {out!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"fake upstream exited ({proc.wait()}) before listening: {out!r}")
                out += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise
    line = out.split(b"\n", 1)[0].decode()
    match = _LISTENING.match(line)
    assert match, f"unexpected first line from the fake upstream: {line!r}"
    return FakeUpstream(proc=proc, name=name, url=match.group(1), port=int(match.group(3)))
