"""Helpers for the llama.cpp tier: spawning llama-server, polling, HTTP, stopping.

Stdlib and tests/support only (free ports and `pid_alive` live in support.upstream), no sleeps
without a deadline. Reused by every test in tests/llamacpp/.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from support.upstream import free_port

#: Flags that keep a tiny model's llama-server small and quick on a 2-core machine.
#: (This llama-server version has no --no-mmap; mmap is fine for a file this small.)
DEFAULT_SERVER_ARGS: tuple[str, ...] = (
    "--ctx-size",
    "256",
    "--threads",
    "2",
    "--threads-batch",
    "2",
    "--parallel",
    "1",
    "--no-webui",
    "--no-warmup",
)


def llama_server_cmd(
    binary: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    port: int,
    host: str = "127.0.0.1",
    alias: str | None = None,
    extra: Sequence[str] = DEFAULT_SERVER_ARGS,
) -> list[str]:
    """The argv that serves ``model`` on host:port."""
    cmd = [str(binary), "--model", str(model), "--host", host, "--port", str(port)]
    if alias:
        cmd += ["--alias", alias]
    return cmd + list(extra)


def http_request(
    method: str, host: str, port: int, path: str, body: Any = None, *, timeout: float = 30.0
) -> tuple[int, bytes]:
    """One HTTP request (JSON body if given); returns (status, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def post_json(host: str, port: int, path: str, body: Any, *, timeout: float = 60.0) -> tuple[int, Any]:
    status, raw = http_request("POST", host, port, path, body, timeout=timeout)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def stream_sse(host: str, port: int, path: str, body: Any, *, timeout: float = 60.0) -> Iterator[str]:
    """POST ``body`` and yield each SSE ``data:`` payload (including the final [DONE])."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
        )
        resp = conn.getresponse()
        if resp.status != 200:
            raise AssertionError(f"SSE request got HTTP {resp.status}: {resp.read()[:500]!r}")
        ctype = resp.getheader("Content-Type", "")
        if "text/event-stream" not in ctype:
            raise AssertionError(f"SSE request got Content-Type {ctype!r}")
        while True:
            line = resp.readline()
            if not line:
                return
            text = line.decode().rstrip("\r\n")
            if text.startswith("data:"):
                yield text[len("data:") :].strip()
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def wait_healthy(
    proc: subprocess.Popen[bytes],
    host: str,
    port: int,
    *,
    timeout: float = 60.0,
    log_path: Path | None = None,
) -> float:
    """Poll GET /health until 200; return seconds waited. Fail early if the process exits."""
    start = time.monotonic()
    deadline = start + timeout
    delay = 0.02
    last = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            tail = log_tail(log_path) if log_path else ""
            raise AssertionError(f"llama-server exited with {code} before /health was OK\n{tail}")
        try:
            status, body = http_request("GET", host, port, "/health", timeout=2.0)
            if status == 200:
                return time.monotonic() - start
            last = f"HTTP {status}: {body[:200]!r}"  # 503 while the model loads
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() >= deadline:
            tail = log_tail(log_path) if log_path else ""
            raise AssertionError(f"/health not OK after {timeout:.0f}s (last: {last})\n{tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send ``sig`` (then SIGKILL after ``timeout``), reap, return the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


@contextlib.contextmanager
def running_llama_server(
    binary: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    log_path: Path,
    port: int | None = None,
    host: str = "127.0.0.1",
    alias: str | None = None,
    extra: Sequence[str] = DEFAULT_SERVER_ARGS,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Spawn llama-server (output to ``log_path``); yield (proc, port); always stop it."""
    port = port or free_port(host)
    cmd = llama_server_cmd(binary, model, port=port, host=host, alias=alias, extra=extra)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc, port
    finally:
        stop(proc)
