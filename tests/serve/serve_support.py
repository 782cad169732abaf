"""Helpers for end-to-end tests of `llamaswap serve` (the fixtures are in conftest.py).

A test writes a config into tmp_path whose models run the fake upstream (`python -m llamaswap
fake-upstream --port ${PORT}`), starts `llamaswap serve CONFIG --listen 127.0.0.1:0` as a real
subprocess, parses the URL it prints, and talks to it over real sockets. At teardown the server
gets SIGTERM; it must exit 0, and every upstream process seen during the test (and every
descendant of the server alive just before the signal) must be gone.

Two tools make the scenarios deterministic without sleeping:
- a *gate*: a model's cmd waits for a file before it execs the fake upstream, so the model
  stays `starting` until the test opens the gate (`Gate.open()`);
- `/api/scheduler`: a consistent snapshot of the scheduler (queue, in-flight counts), read
  inside its owner task, so a test can wait until a request is queued before going on.
"""

from __future__ import annotations

import http.client as httpclient
import json
import os
import random
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from support.upstream import Response, http, pid_alive, wait_until

PY = sys.executable
URL_LINE = re.compile(r"serving .* on (http://127\.0\.0\.1:\d+) ")
# Generous: the machine is shared with other test runs. Nothing waits this long unless broken.
DEADLINE = 30.0


# -- configs ----------------------------------------------------------------------------------


def scripted_upstream_cmd() -> str:
    """tests/support/scripted_upstream.py as a config `cmd`: a raw socket upstream whose
    request path picks the exact bytes it answers with (see its SCRIPTS)."""
    script = Path(__file__).resolve().parent.parent / "support" / "scripted_upstream.py"
    return f"{shlex.quote(PY)} {shlex.quote(str(script))} --port ${{PORT}}"


def upstream_cmd(
    name: str,
    *,
    startup_delay: float = 0.0,
    fail_health: bool = False,
    token_delay: float = 0.0,
    exit_after: float | None = None,
) -> str:
    """The fake upstream as a config `cmd` (${PORT} is substituted by the compiler)."""
    parts = [
        PY,
        "-m",
        "llamaswap",
        "fake-upstream",
        "--host",
        "127.0.0.1",
        "--port",
        "${PORT}",
        "--name",
        name,
    ]
    if startup_delay:
        parts += ["--startup-delay", str(startup_delay)]
    if fail_health:
        parts.append("--fail-health")
    if token_delay:
        parts += ["--token-delay", str(token_delay)]
    if exit_after is not None:
        parts += ["--exit-after", str(exit_after)]
    return " ".join(p if p == "${PORT}" else shlex.quote(p) for p in parts)


def shell_cmd(script: str) -> str:
    """`sh -c SCRIPT` as a config cmd."""
    return "sh -c " + shlex.quote(script)


@dataclass
class Gate:
    """A file a gated model waits for before it starts its upstream."""

    path: Path

    def wrap(self, cmd: str) -> str:
        gate = shlex.quote(str(self.path))
        return shell_cmd(f"while [ ! -e {gate} ]; do sleep 0.02; done; exec {cmd}")

    def open(self) -> None:
        self.path.touch()


def _ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block(count: int) -> int:
    """First of `count` consecutive free ports, below the usual ephemeral range (where other
    tests' port-0 sockets land)."""
    rng = random.Random()
    for _ in range(500):
        first = rng.randrange(20000, 32000 - count)
        if _ports_free(first, count):
            return first
    raise AssertionError(f"no block of {count} free ports")


def model(cmd: str, **keys: Any) -> dict:
    """A model entry whose proxy is 127.0.0.1:${PORT} (the fake upstream binds 127.0.0.1)."""
    return {"cmd": cmd, "proxy": "http://127.0.0.1:${PORT}", **keys}


# -- processes --------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) of every live process (zombies excluded)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(root: int) -> set[int]:
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def in_groups(pgids: set[int]) -> set[int]:
    """Live processes in any of these process groups."""
    return {pid for pid, (_, pgid) in process_table().items() if pgid in pgids}


# -- a client that can read a response bit by bit, or walk away -----------------------------


class Call:
    """One HTTP request on its own connection (http.client: real socket, no pooling)."""

    def __init__(
        self,
        url: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = DEADLINE,
    ) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = httpclient.HTTPConnection(host, int(port), timeout=timeout)
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        self.conn.request(method, path, data, headers)
        self.resp: httpclient.HTTPResponse | None = None

    def response(self) -> httpclient.HTTPResponse:
        if self.resp is None:
            self.resp = self.conn.getresponse()
        return self.resp

    def events(self) -> Iterator[str]:
        """The `data:` payloads of an SSE response, as they arrive."""
        resp = self.response()
        while True:
            line = resp.readline()
            if not line:
                return
            line = line.strip()
            if line.startswith(b"data: "):
                yield line[6:].decode()

    def disconnect(self) -> None:
        """Walk away: FIN the socket now, whoever still holds a reference to it."""
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.resp is not None:
            self.resp.close()
        self.conn.close()


def envelope(message: str, type_: str, code: str) -> dict:
    """llama-swap's error body, spelled out."""
    return {"src": "llama-swap", "error": {"message": message, "type": type_, "param": None, "code": code}}


# -- the server -------------------------------------------------------------------------------


@dataclass
class Serve:
    """A running `llamaswap serve` subprocess."""

    proc: subprocess.Popen
    url: str
    banner: list[str]
    stderr_path: Path
    pids: set[int] = field(default_factory=set)  # upstream PIDs seen (leaders = group ids)
    extra_pids: set[int] = field(default_factory=set)  # other processes that must not outlive it
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    exit_code: int | None = None

    # HTTP
    def request(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float = DEADLINE
    ) -> Response:
        resp = http(method, self.url + path, body, {**self.headers, **(headers or {})}, timeout)
        pid = resp.headers.get("X-Upstream-Pid")
        if pid and pid.isdigit():
            self.pids.add(int(pid))
        return resp

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def call(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> Call:
        return Call(self.url, method, path, body, {**self.headers, **(headers or {})})

    def chat_call(self, model_id: str, content: str = "hello", **fields: Any) -> Call:
        return self.call(
            "POST",
            "/v1/chat/completions",
            {"model": model_id, "messages": [{"role": "user", "content": content}], **fields},
        )

    def chat(self, model: str, content: str = "hello", **fields: Any) -> Response:
        return self.post(
            "/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": content}], **fields},
        )

    # state
    def running(self) -> dict[str, dict]:
        resp = self.get("/running")
        assert resp.status == 200, resp
        out = {}
        for entry in resp.json()["running"]:
            if entry.get("pid"):
                self.pids.add(entry["pid"])
            out[entry["model"]] = entry
        return out

    def state(self, model_id: str) -> str:
        return self.running().get(model_id, {}).get("state", "stopped")

    def scheduler(self) -> dict:
        resp = self.get("/api/scheduler")
        assert resp.status == 200, resp
        return resp.json()

    def upstream_url(self, model_id: str) -> str:
        return self.running()[model_id]["proxy"]

    def wait(self, predicate: Callable[[], Any], message: str, timeout: float = DEADLINE) -> Any:
        return wait_until(predicate, timeout=timeout, interval=0.05, message=message)

    def wait_state(self, model_id: str, state: str, timeout: float = DEADLINE) -> dict:
        """Wait until /running shows the model in `state`; its entry then."""

        def check():
            entry = self.running().get(model_id, {"model": model_id, "state": "stopped"})
            return entry if entry["state"] == state else None

        return self.wait(check, f"{model_id} to be {state}", timeout)

    def wait_queued(self, model_id: str, count: int = 1) -> dict:
        def check():
            snap = self.scheduler()
            return snap if sum(q["model"] == model_id for q in snap["queue"]) >= count else None

        return self.wait(check, f"{count} request(s) for {model_id} to be queued")

    def wait_reserved(self, model_id: str, count: int) -> dict:
        def check():
            snap = self.scheduler()
            return snap if snap["models"][model_id]["reserved"] >= count else None

        return self.wait(check, f"{count} admitted request(s) for {model_id}")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    # lifecycle
    def send(self, sig: int) -> None:
        """Signal the server, remembering its live descendants for the orphan check."""
        self.extra_pids |= descendants(self.proc.pid)
        self.proc.send_signal(sig)

    def terminate(self, sig: int | None = signal.SIGTERM, timeout: float = DEADLINE) -> int:
        """Signal the server (unless it has exited, or `sig` is None: it was signalled
        already), wait for it to exit, and check that no upstream outlived it."""
        if self.exit_code is not None:
            return self.exit_code
        if sig is not None and self.proc.poll() is None:
            self.send(sig)
        watched = set(self.pids) | set(self.extra_pids)
        if self.proc.returncode is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                left = descendants(self.proc.pid)
                self.proc.kill()
                self.proc.wait()
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                raise AssertionError(
                    f"llamaswap serve did not exit within {timeout}s of its signal\n{self.log()}"
                )
        self.exit_code = self.proc.returncode
        groups = set(self.pids)

        def gone() -> bool:
            return not any(pid_alive(p) for p in watched) and not in_groups(groups)

        try:
            wait_until(gone, timeout=5.0, message="every upstream process to be gone")
        except AssertionError:
            orphans = sorted({p for p in watched if pid_alive(p)} | in_groups(groups))
            for pid in orphans:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError(f"orphan processes after llamaswap exited: {orphans}")
        return self.exit_code


def start_serve(
    config_path: Path | None,
    *,
    cwd: Path,
    args: tuple[str, ...] = (),
    executable: tuple[str, ...] = (PY, "-m", "llamaswap"),
    timeout: float = DEADLINE,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> Serve:
    """Run `llamaswap serve [CONFIG] --listen 127.0.0.1:0` and wait for its URL (`popen`:
    extra subprocess.Popen arguments, e.g. a controlling terminal; `env`: variables set on
    top of this environment, which loses its `*_proxy` variables first)."""
    stderr_path = cwd / f"serve-{time.monotonic_ns()}.stderr"
    argv = [
        *executable,
        "serve",
        *([str(config_path)] if config_path else []),
        "--listen",
        "127.0.0.1:0",
        *args,
    ]
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    # The activity store's default place: one per test directory (a restart in the same
    # test finds its records; other tests do not see them).
    env["XDG_DATA_HOME"] = str(cwd / "data")
    with open(stderr_path, "wb") as err:
        popen.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=cwd, env=env, **popen)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            text = out.decode(errors="replace")
            match = URL_LINE.search(text)
            if match and text.count("curl -s") >= 2 and "\nweb UI: " in text and text.endswith("\n"):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"llamaswap serve printed no URL in {timeout}s: {out!r}\n"
                    f"{stderr_path.read_text(errors='replace')}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(
                        f"llamaswap serve exited ({proc.wait()}) before listening: {out!r}\n"
                        f"{stderr_path.read_text(errors='replace')}"
                    )
                out += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Serve(proc=proc, url=match.group(1), banner=text.splitlines(), stderr_path=stderr_path)


@dataclass
class ServeFactory:
    tmp_path: Path
    started: list[Serve] = field(default_factory=list)

    def gate(self, name: str = "gate") -> Gate:
        return Gate(self.tmp_path / name)

    def write_config(self, config: dict, name: str = "config.yaml") -> Path:
        config = dict(config)
        n = len(config.get("models", {}))
        config.setdefault("startPort", free_port_block(max(1, n)))
        path = self.tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def __call__(self, config: dict, *, args: tuple[str, ...] = (), **popen: Any) -> Serve:
        server = start_serve(self.write_config(config), cwd=self.tmp_path, args=args, **popen)
        self.started.append(server)
        return server

    def finish(self) -> None:
        errors = []
        for server in self.started:
            try:
                code = server.terminate()
                if code != 0:
                    errors.append(f"llamaswap serve exited {code}\n{server.log()}")
            except AssertionError as exc:
                errors.append(str(exc))
        assert not errors, "\n".join(errors)


API_KEY = "sekrit"
