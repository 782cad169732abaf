"""Logs people can read: logLevel, logToStdout (proxy/upstream/both/none), logTimeFormat,
an access line per request, start/ready/stop lines with timings, a loading progress line,
and --log-format json (one JSON object per line)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from serve_support import free_port_block, model, start_serve, upstream_cmd

from llamaswap.runtime.logs import UPSTREAM, JsonFormatter, TextFormatter, go_time

WHEN = 1767268800.123456  # 2026-01-01T12:00:00.123456Z
HALF = 1767268800.5  # 2026-01-01T12:00:00.5Z, exact in a float


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("rfc3339", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)"),
        ("RFC3339Nano", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}([+-]\d\d:\d\d|Z)"),
        ("kitchen", r"\d{1,2}:\d\dPM|\d{1,2}:\d\dAM"),
        ("stampmilli", r"[A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d\.\d{3}"),
        ("ansic", r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 1-3]\d \d\d:\d\d:\d\d \d{4}"),
        ("2006-01-02", r""),  # a Go layout, not a name: llama-swap prints no timestamp
    ],
)
def test_log_time_formats_are_llama_swaps_names(name, pattern):
    assert re.fullmatch(pattern, go_time(name, WHEN)), go_time(name, WHEN)


@pytest.mark.parametrize(
    "tz, name, expected",
    [
        # Go's "Z07:00" writes Z for a zero offset, the offset otherwise.
        ("UTC", "rfc3339", "2026-01-01T12:00:00Z"),
        ("UTC", "rfc3339nano", "2026-01-01T12:00:00.5Z"),
        ("Asia/Kolkata", "rfc3339", "2026-01-01T17:30:00+05:30"),
        ("America/New_York", "rfc3339nano", "2026-01-01T07:00:00.5-05:00"),
        # "-0700" is always numeric.
        ("UTC", "rfc1123z", "Thu, 01 Jan 2026 12:00:00 +0000"),
    ],
)
def test_rfc3339_writes_the_zone_as_go_does(tz, name, expected):
    # In a child process, so TZ takes effect without touching this one's zone.
    code = f"from llamaswap.runtime.logs import go_time; print(go_time({name!r}, {HALF!r}))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "TZ": tz}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected


def record(name: str, msg: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_text_and_json_formats():
    assert (
        TextFormatter("").format(record("llamaswap.process", "a: ready in 1.00s"))
        == "INFO llamaswap.process: a: ready in 1.00s"
    )
    assert TextFormatter("").format(record(UPSTREAM, "[a] hello")) == "[a] hello"
    assert re.match(
        r"\d{4}-\d\d-\d\dT\S+ WARN x: y$",
        TextFormatter("rfc3339").format(
            record("x", "y") if False else logging.LogRecord("x", logging.WARNING, __file__, 1, "y", (), None)
        ),
    )
    line = JsonFormatter().format(record("llamaswap.access", 'GET "/v1/models"\n', status=200, model="-"))
    obj = json.loads(line)
    assert "\n" not in line
    assert (obj["level"], obj["logger"], obj["msg"], obj["status"], obj["model"]) == (
        "info",
        "llamaswap.access",
        'GET "/v1/models"\n',
        200,
        "-",
    )


def serve_with(tmp_path: Path, log_to_stdout: str, *args: str, startup_delay: float = 0.0):
    config = {
        "healthCheckTimeout": 30,
        "logToStdout": log_to_stdout,
        "startPort": free_port_block(1),
        "models": {"m": model(upstream_cmd("m", startup_delay=startup_delay))},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return start_serve(path, cwd=tmp_path, args=args)


def wait_for(server, pattern: str) -> str:
    return server.wait(
        lambda: re.search(pattern, server.log(), re.M) and server.log(), f"log line {pattern!r}"
    )


@pytest.mark.e2e
def test_both_and_json_give_upstream_lifecycle_and_access_lines_one_object_each(tmp_path: Path):
    server = serve_with(tmp_path, "both", "--log-format", "json", startup_delay=5.6)
    try:
        assert server.chat("m").status == 200
        assert server.post("/api/models/unload").status == 200
        wait_for(server, r'"event": "stopped"')
    finally:
        assert server.terminate() == 0
    objs = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert objs and all(line.startswith("{") for line in server.log().splitlines() if line.strip())
    events = [o.get("event") for o in objs if o["logger"] == "llamaswap.process" and o.get("model") == "m"]
    assert events[:4] == ["starting", "loading", "ready", "stopping"] and "stopped" in events
    ready = next(o for o in objs if o.get("event") == "ready")
    assert ready["seconds"] >= 5.0 and ready["msg"].startswith("m: ready in ")
    access = [o for o in objs if o["logger"] == "llamaswap.access" and o["path"] == "/v1/chat/completions"]
    assert len(access) == 1
    assert (access[0]["method"], access[0]["model"], access[0]["status"]) == ("POST", "m", 200)
    assert access[0]["bytes"] > 0 and access[0]["duration"] >= 5.0
    assert any(o["logger"] == "upstream" and o["model"] == "m" for o in objs)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "mode, proxy_lines, upstream_lines",
    [("proxy", True, False), ("upstream", False, True), ("none", False, False)],
)
def test_log_to_stdout_picks_what_reaches_the_terminal(tmp_path: Path, mode, proxy_lines, upstream_lines):
    server = serve_with(tmp_path, mode)
    try:
        assert server.chat("m").status == 200
        marker = server.get("/health")  # one more access line, after the upstream has logged
        assert marker.status == 200
        if proxy_lines:
            wait_for(server, r"INFO llamaswap\.access: GET /health")
        if upstream_lines:
            wait_for(server, r"^\[m\] ")
    finally:
        assert server.terminate() == 0
    log = server.log()
    assert bool(re.search(r"INFO llamaswap\.process: m: ready in", log)) is proxy_lines, log
    assert bool(re.search(r"^\[m\] ", log, re.M)) is upstream_lines, log


@pytest.mark.e2e
def test_access_lines_count_the_bytes_sent_also_for_a_stream_the_client_aborted(tmp_path: Path):
    import socket

    server = serve_with(tmp_path, "proxy", "--log-format", "json")
    try:
        assert server.chat("m").status == 200
        assert server.get("/v1/models").status == 200  # an answer aiohttp's Response writes
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "tokens": 100000}
        ).encode()
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            seen = b""
            while seen.count(b"data: ") < 5:  # the head and a few events, then the client leaves
                chunk = sock.recv(65536)
                assert chunk, seen
                seen += chunk
        server.wait(
            lambda: server.log().count('"path": "/v1/chat/completions"') >= 2,
            "the aborted stream's access line",
        )
    finally:
        assert server.terminate() == 0
    objs = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [o for o in objs if o["logger"] == "llamaswap.access"]
    models = next(o for o in access if o["path"] == "/v1/models")
    assert models["status"] == 200 and models["bytes"] > 0
    chats = [o for o in access if o["path"] == "/v1/chat/completions"]
    assert len(chats) == 2
    aborted = chats[1]
    # What reached the client before it left: the status it was sent and its body bytes so far.
    assert aborted["status"] == 200 and aborted["bytes"] >= seen.count(b"data: ") * 10, aborted
