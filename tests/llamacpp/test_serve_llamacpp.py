"""`llamaswap serve` in front of two real llama-server processes (tiny random-weight models).

One server, two mutually exclusive models (no groups: llama-swap's classic one-at-a-time).
The tests run in order against it: load A, swap to B (A's llama-server must be gone),
stream from A through the proxy, then SIGTERM llamaswap and check that no llama-server
survives. Every wait polls under a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llamacpp_helpers import DEFAULT_SERVER_ARGS, http_request, post_json, stream_sse
from support.upstream import pid_alive

DEADLINE = 120.0
URL = re.compile(r"serving .* on http://(127\.0\.0\.1):(\d+) ")


def _proc_children(pid: int) -> set[int]:
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] in (b"Z", b"X"):
            continue
        if int(fields[1]) == pid:
            out.add(int(entry))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait(predicate, what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    def __init__(self, proc: subprocess.Popen, host: str, port: int, log: Path) -> None:
        self.proc, self.host, self.port, self.log = proc, host, port, log
        self.seen: set[int] = set()

    def running(self) -> dict[str, dict]:
        status, raw = http_request("GET", self.host, self.port, "/running")
        assert status == 200, raw
        out = {e["model"]: e for e in json.loads(raw)["running"]}
        for e in out.values():
            if e.get("pid"):
                self.seen.add(e["pid"])
        return out

    def llama_servers(self) -> set[int]:
        return {p for p in _proc_children(self.proc.pid) if "llama-server" in _cmdline(p)}


@pytest.fixture(scope="module")
def server(llama_server_bin: Path, gguf_models: dict[str, Path], tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("serve-llamacpp")
    extra = " ".join(DEFAULT_SERVER_ARGS)
    models = {}
    for name, path in sorted(gguf_models.items()):
        models[name] = {
            "cmd": f"{llama_server_bin} --model {path} --host 127.0.0.1 --port ${{PORT}} --alias {name} {extra}",
            "proxy": "http://127.0.0.1:${PORT}",
        }
    config = tmp / "config.yaml"
    # Ports from a random high block so parallel runs on one machine do not collide.
    start_port = 20000 + (os.getpid() * 7) % 20000
    config.write_text(json.dumps({"healthCheckTimeout": 60, "startPort": start_port, "models": models}))
    log = tmp / "serve.log"
    with open(log, "wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamaswap", "serve", str(config), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=errf,
        )
    assert proc.stdout is not None
    banner = proc.stdout.readline().decode()
    match = URL.search(banner)
    assert match, f"no URL in {banner!r}; log:\n{log.read_text(errors='replace')}"
    srv = Server(proc, match.group(1), int(match.group(2)), log)
    try:
        yield srv
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_first_model_loads_and_answers(server: Server) -> None:
    status, body = post_json(
        server.host,
        server.port,
        "/v1/chat/completions",
        {"model": "tiny-llama-a", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]},
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] is not None
    running = server.running()
    assert list(running) == ["tiny-llama-a"]
    assert running["tiny-llama-a"]["state"] == "ready"
    assert len(server.llama_servers()) == 1


def test_swap_to_second_model_stops_the_first(server: Server) -> None:
    before = server.running()["tiny-llama-a"]["pid"]
    status, body = post_json(
        server.host,
        server.port,
        "/v1/chat/completions",
        {"model": "tiny-llama-b", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]},
    )
    assert status == 200, body
    running = server.running()
    assert list(running) == ["tiny-llama-b"], running
    _wait(lambda: not pid_alive(before), "the evicted llama-server to exit")
    assert len(server.llama_servers()) == 1


def test_streaming_through_the_proxy_swaps_back(server: Server) -> None:
    chunks = list(
        stream_sse(
            server.host,
            server.port,
            "/v1/chat/completions",
            {
                "model": "tiny-llama-a",
                "max_tokens": 8,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
    )
    assert chunks[-1] == "[DONE]"
    objects = [json.loads(c) for c in chunks[:-1]]
    assert objects and all(o["object"] == "chat.completion.chunk" for o in objects)
    assert any(o["choices"] and o["choices"][0].get("finish_reason") for o in objects)
    assert list(server.running()) == ["tiny-llama-a"]


def test_no_llama_server_survives_shutdown(server: Server) -> None:
    server.running()
    pids = server.llama_servers() | server.seen
    assert pids
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.log.read_text(errors="replace")[-2000:]
    _wait(lambda: not any(pid_alive(p) for p in pids), "every llama-server to exit", timeout=30)
