"""Request-path safety, end to end (issue 12, items 5-10): bounded waits, bounded memory,
bounded connections, faithful forwarding, no cross-site control, no secrets on operator
endpoints. Real `llamaswap serve` subprocesses over real sockets, the fake upstream behind.
"""

from __future__ import annotations

import hashlib
import http.client as httpclient
import json
import re
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_support import API_KEY, DEADLINE, PY, model, shell_cmd, start_serve, upstream_cmd
from support.upstream import http

from llamaswap.compiler.plan import CompileOptions, compile_text

MiB = 1 << 20


# -- helpers ----------------------------------------------------------------------------------


def host_port(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw_socket(server, timeout: float = DEADLINE) -> socket.socket:
    sock = socket.create_connection(host_port(server), timeout=timeout)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def last_request(server, model_id: str) -> dict:
    resp = http("GET", server.upstream_url(model_id) + "/debug/last-request")
    assert resp.status == 200, resp
    return resp.json()


def upstream_requests(server, model_id: str) -> list[dict]:
    resp = http("GET", server.upstream_url(model_id) + "/debug/requests")
    assert resp.status == 200, resp
    return resp.json()["requests"]


def vm_hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def chat_body(model_id: str, **fields) -> dict:
    return {"model": model_id, "messages": [{"role": "user", "content": "hi"}], **fields}


# -- 5. bounded waits -------------------------------------------------------------------------


def test_timeouts_are_honoured_without_a_not_implemented_warning():
    text = (
        "models:\n  m:\n    cmd: x --port ${PORT}\n"
        "    timeouts: {connect: 5, responseHeader: 7, streamIdle: 9, idleConn: 11}\n"
    )
    plan = compile_text(text, "c.yaml", CompileOptions(env={}))
    assert plan.ok
    assert [d.code for d in plan.diagnostics if d.code.startswith("LS40")] == []


def test_an_upstream_that_never_answers_gets_504_and_does_not_starve_other_models(serve):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "stuck": model(upstream_cmd("stuck"), timeouts={"responseHeader": 1}),
                "other": model(upstream_cmd("other")),
            },
            "matrix": {"sets": {"s": "stuck", "o": "other"}},  # exclusive: other must evict stuck
        }
    )
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        hung = pool.submit(server.chat, "stuck", delay=3600, timeout=20)
        server.wait(lambda: server.scheduler()["models"]["stuck"]["in_flight"] == 1, "stuck in flight")
        waiting = pool.submit(server.chat, "other", timeout=20)
        resp = hung.result()
        assert resp.status == 504
        assert time.monotonic() - started < 15
        message = resp.json()["error"]["message"]
        assert "stuck" in message and "response header" in message and "1s" in message
        assert resp.json()["error"]["code"] == "gateway_timeout"
        # The stuck request no longer holds its model: the other model's swap went ahead.
        other = waiting.result()
    assert other.status == 200 and other.headers["X-Upstream-Name"] == "other"


def test_a_stream_that_stalls_mid_way_ends_with_a_504_error_event(serve):
    server = serve({"models": {"m": model(upstream_cmd("m"), timeouts={"streamIdle": 1})}})
    call = server.chat_call("m", stream=True, tokens=50, stall_after=3)
    started = time.monotonic()
    resp = call.response()
    assert resp.status == 200
    events = []
    try:
        for payload in call.events():
            events.append(payload)
    except (httpclient.IncompleteRead, ConnectionError):
        pass  # the connection is aborted after the error event: the answer is truncated
    assert time.monotonic() - started < 15
    assert len(events) == 4, events
    chunks = [json.loads(e) for e in events[:3]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    error = json.loads(events[3])["error"]
    assert error["code"] == "gateway_timeout" and "no data for 1s" in error["message"]
    server.wait(lambda: server.scheduler()["models"]["m"]["in_flight"] == 0, "the stream released")
    assert server.chat("m").status == 200


def test_a_request_waiting_past_the_queue_deadline_gets_503_with_retry_after(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 60,
            "models": {"slow": model(gate.wrap(upstream_cmd("slow")))},
            "routing": {"scheduler": {"settings": {"fifo": {"queue_timeout": 1}}}},
        }
    )
    started = time.monotonic()
    resp = server.chat("slow", timeout=20)
    assert resp.status == 503
    assert time.monotonic() - started < 15
    assert resp.headers["Retry-After"] == "1"
    assert "waited" in resp.json()["error"]["message"] and "1s" in resp.json()["error"]["message"]
    server.wait(lambda: server.scheduler()["models"]["slow"]["reserved"] == 0, "the slot released")
    gate.open()  # the swap goes on without its waiter: the next request is served at once
    server.wait_state("slow", "ready")
    assert server.chat("slow").status == 200


# -- 6. bounded memory ------------------------------------------------------------------------


def test_a_declared_oversized_body_is_413_before_it_is_read(serve):
    server = serve({"server": {"maxBodyBytes": MiB}, "models": {"m": model(upstream_cmd("m"))}})
    conn = httpclient.HTTPConnection(*host_port(server), timeout=10)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(100 * MiB))
    conn.endheaders()
    resp = conn.getresponse()  # no body byte sent: the answer comes from the header alone
    assert resp.status == 413
    assert "1048576" in json.loads(resp.read())["error"]["message"]
    conn.close()
    assert server.running() == {}  # nothing was started for it


def test_a_chunked_body_crossing_the_limit_is_413(serve):
    server = serve({"server": {"maxBodyBytes": MiB}, "models": {"m": model(upstream_cmd("m"))}})
    conn = httpclient.HTTPConnection(*host_port(server), timeout=20)
    conn.putrequest("POST", "/upstream/m/v1/upload")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    block = b"x" * (256 * 1024)
    try:
        for _ in range(8):  # 2 MiB
            conn.send(b"%x\r\n%s\r\n" % (len(block), block))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    # Under the limit it streams through.
    small = server.post(
        "/upstream/m/v1/upload", b"y" * (MiB - 10), headers={"Content-Type": "application/octet-stream"}
    )
    assert small.status == 200
    assert last_request(server, "m")["body_length"] == MiB - 10


def _upload(
    server, path: str, content_type: str, parts: list[bytes], repeat: bytes, count: int, tail: bytes
) -> tuple[int, bytes]:
    total = sum(map(len, parts)) + len(repeat) * count + len(tail)
    conn = httpclient.HTTPConnection(*host_port(server), timeout=60)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(total))
    conn.endheaders()
    try:
        for part in parts:
            conn.send(part)
        for _ in range(count):
            conn.send(repeat)
        conn.send(tail)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_five_concurrent_100mb_uploads_stay_under_300mb_peak_rss(serve):
    server = serve({"models": {"audio": model(upstream_cmd("audio"))}})
    assert server.chat("audio").status == 200
    boundary = "llamaswap-boundary-7f3a"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\naudio\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * 4096  # 1 MiB
    tail = f"\r\n--{boundary}--\r\n".encode()
    sha = hashlib.sha256(head)
    for _ in range(100):
        sha.update(block)
    sha.update(tail)
    expected = (len(head) + 100 * MiB + len(tail), sha.hexdigest())

    ctype = f"multipart/form-data; boundary={boundary}"
    with ThreadPoolExecutor(5) as pool:
        results = list(
            pool.map(
                lambda _: _upload(server, "/v1/audio/transcriptions", ctype, [head], block, 100, tail),
                range(5),
            )
        )
    assert [status for status, _ in results] == [200] * 5
    got = [
        (r["body_length"], r["body_sha256"])
        for r in upstream_requests(server, "audio")
        if r["path"] == "/v1/audio/transcriptions"
    ]
    assert got == [expected] * 5  # every byte arrived, unchanged

    # Five 100 MB JSON bodies are over the default limit: refused, nothing kept.
    json_head = b'{"model": "audio", "messages": [{"role": "user", "content": "'
    with ThreadPoolExecutor(5) as pool:
        refused = list(
            pool.map(
                lambda _: _upload(
                    server, "/v1/chat/completions", "application/json", [json_head], b"a" * MiB, 100, b'"}]}'
                ),
                range(5),
            )
        )
    assert [status for status, _ in refused] == [413] * 5
    peak = vm_hwm_bytes(server.proc.pid)
    assert peak < 300 * MiB, f"peak RSS {peak / MiB:.0f} MiB"


def test_a_model_field_after_a_100mb_file_part_is_held_once(serve):
    """The body is held up to the end of its model field (it comes last here): once, not
    twice (the buffer was copied into bytes, ~200 MB over the server's RSS for 100 MB)."""
    server = serve({"models": {"audio": model(upstream_cmd("audio"))}})
    assert server.chat("audio").status == 200
    boundary = "llamaswap-boundary-7f3a"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * 4096  # 1 MiB
    tail = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\naudio\r\n--{boundary}--\r\n'
    )
    sha = hashlib.sha256(head)
    for _ in range(100):
        sha.update(block)
    sha.update(tail.encode())
    before = vm_hwm_bytes(server.proc.pid)
    ctype = f"multipart/form-data; boundary={boundary}"
    status, _ = _upload(server, "/v1/audio/transcriptions", ctype, [head], block, 100, tail.encode())
    assert status == 200
    got = [r for r in upstream_requests(server, "audio") if r["path"] == "/v1/audio/transcriptions"]
    assert [(r["body_length"], r["body_sha256"]) for r in got] == [
        (len(head) + 100 * MiB + len(tail), sha.hexdigest())
    ]
    grown = vm_hwm_bytes(server.proc.pid) - before
    assert grown < 150 * MiB, f"peak RSS grew {grown / MiB:.0f} MiB for a 100 MiB body"


# -- 7. bounded connections -------------------------------------------------------------------


def test_slow_headers_slow_bodies_and_idle_keepalive_connections_are_closed(serve):
    server = serve(
        {
            "server": {"headerTimeout": 1, "bodyTimeout": 1, "keepaliveTimeout": 1},
            "models": {"m": model(upstream_cmd("m"))},
        }
    )
    started = time.monotonic()
    with raw_socket(server) as slow_head:
        slow_head.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        answer = read_until_closed(slow_head)
    assert time.monotonic() - started < 10
    assert answer.startswith(b"HTTP/1.1 408 ")

    started = time.monotonic()
    with raw_socket(server) as slow_body:
        slow_body.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mod'
        )
        answer = read_until_closed(slow_body)
    assert time.monotonic() - started < 10
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"body" in answer

    started = time.monotonic()
    with raw_socket(server) as idle:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(idle)  # answered, then closed once idle for 1 s
    assert time.monotonic() - started < 10
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_connections_over_the_cap_are_refused_clearly(serve):
    server = serve({"server": {"maxConnections": 4}, "models": {"m": model(upstream_cmd("m"))}})
    held = [raw_socket(server) for _ in range(4)]
    try:
        for sock in held:  # each one is served: the server has accepted all four
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with raw_socket(server) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"too many connections" in answer and b"Retry-After: 1" in answer
    finally:
        for sock in held:
            sock.close()
    server.wait(lambda: server.get("/health").status == 200, "a slot to be free again")
    assert "too many connections" in server.log()


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(serve, tmp_path):
    hard = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout)
    soft = min(256, hard)
    if soft == hard:
        pytest.skip("the hard limit is too low to tell")
    path = serve.write_config({"models": {"m": model(upstream_cmd("m"))}})
    server = start_serve(
        path, cwd=tmp_path, executable=("prlimit", f"--nofile={soft}:{hard}", PY, "-m", "llamaswap")
    )
    serve.started.append(server)
    with open(f"/proc/{server.proc.pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], line


# -- 8. faithful forwarding -------------------------------------------------------------------


def test_path_and_query_reach_the_upstream_exactly_as_sent(serve):
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    raw = "/a%20b/c%23d/%C3%A9/%2F?q=%20x%23y&z=%E2%9C%93&plus=a+b&e="
    resp = server.get("/upstream/m" + raw)
    assert resp.status == 200, resp
    assert last_request(server, "m")["raw_path"] == raw
    resp = server.post("/v1/chat/completions?x=%E2%9C%93&y=%20", chat_body("m"))
    assert resp.status == 200
    assert last_request(server, "m")["raw_path"] == "/v1/chat/completions?x=%E2%9C%93&y=%20"
    resp = server.post("/v/chat/completions?k=%23", chat_body("m"))
    assert resp.status == 200
    assert last_request(server, "m")["raw_path"] == "/chat/completions?k=%23"


def test_an_absolute_form_target_reaches_the_upstream_as_its_path(serve):
    """`POST http://host:port/v1/... HTTP/1.1` (what a client configured to use llamaswap as
    its HTTP proxy sends; RFC 9112 says a server must accept it) routes like the path, and
    the upstream gets the path and query only."""
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    for target, forwarded in (
        (server.url + "/v1/chat/completions?x=%E2%9C%93", "/v1/chat/completions?x=%E2%9C%93"),
        (server.url.replace("http://", "HTTP://") + "/upstream/m/props?a=1", "/props?a=1"),
    ):
        method, body = ("GET", None) if "/upstream/" in target else ("POST", json.dumps(chat_body("m")))
        conn = httpclient.HTTPConnection(server.url.removeprefix("http://"), timeout=DEADLINE)
        try:
            conn.request(method, target, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        assert resp.status == 200, (target, resp.status)
        assert last_request(server, "m")["raw_path"] == forwarded


def test_llamaswaps_api_key_is_not_forwarded_and_a_models_own_key_replaces_it(serve):
    server = serve(
        {
            "apiKeys": [API_KEY],
            "models": {
                "plain": model(upstream_cmd("plain")),
                "keyed": model(upstream_cmd("keyed"), apiKey="upstream-key"),
            },
            "matrix": {"sets": {"all": "plain & keyed"}},
        }
    )
    key = {"Authorization": f"Bearer {API_KEY}"}
    for m in ("keyed", "plain"):
        assert server.post("/v1/chat/completions", chat_body(m), headers=key).status == 200
    urls = {e["model"]: e["proxy"] for e in server.get("/running", headers=key).json()["running"]}

    def last_headers(model_id: str) -> dict:
        return http("GET", urls[model_id] + "/debug/last-request").json()["headers"]

    for auth in (
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": f"bearer {API_KEY}"},
        {"Authorization": f"BEARER {API_KEY}"},
        {"x-api-key": API_KEY},
    ):
        resp = server.post("/v1/chat/completions", chat_body("plain"), headers=auth)
        assert resp.status == 200, (auth, resp)
        headers = last_headers("plain")
        assert "authorization" not in headers and "x-api-key" not in headers, headers
    resp = server.post(
        "/upstream/keyed/v1/anything",
        b"{}",
        headers={"Authorization": f"Bearer {API_KEY}", "x-api-key": API_KEY},
    )
    assert resp.status == 200
    headers = last_headers("keyed")
    assert headers["authorization"] == "Bearer upstream-key"
    assert headers["x-api-key"] == "upstream-key"
    assert API_KEY not in json.dumps(headers)


def test_bad_bodies_are_400_and_malformed_http_logs_one_line(serve):
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    deep = b'{"model": "m", "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    resp = server.post("/v1/chat/completions", deep)
    assert resp.status == 400 and resp.json()["error"]["code"] == "bad_request"
    resp = server.post("/v1/chat/completions", {"messages": []})
    assert resp.status == 400
    assert resp.json()["error"]["message"] == (
        'no model id could be identified: the JSON body has no "model" field (GET /v1/models lists the names'
        " it takes)"
    )

    malformed = [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
    ]
    for data in malformed:
        with raw_socket(server) as sock:
            sock.sendall(data)
            assert re.match(rb"HTTP/1\.[01] 400 ", read_until_closed(sock))
    server.wait(
        lambda: server.log().count("bad HTTP request") >= len(malformed), "one log line per malformed request"
    )
    log = server.log()
    assert "Traceback" not in log
    assert log.count("bad HTTP request") == len(malformed)


# -- 9. no cross-site control -----------------------------------------------------------------


def test_cross_site_requests_and_foreign_hosts_cannot_control_the_server(serve):
    server = serve(
        {
            "server": {"allowedOrigins": ["http://ui.example"], "allowedHosts": ["llm.internal"]},
            "models": {"m": model(upstream_cmd("m"))},
        }
    )
    _, port = host_port(server)
    evil = {"Origin": "http://evil.example"}
    text = {"Content-Type": "text/plain"}  # a CORS "simple" request: no preflight
    resp = server.post("/v1/chat/completions", json.dumps(chat_body("m")).encode(), headers={**evil, **text})
    assert resp.status == 403 and "cross-site" in resp.json()["error"]["message"]
    assert server.running() == {}  # the model was not started
    assert server.get("/unload", headers={"Sec-Fetch-Site": "cross-site"}).status == 403
    assert server.post("/api/models/unload", headers=evil).status == 403
    assert server.post("/api/models/unload/m", headers={"Sec-Fetch-Site": "same-site"}).status == 403
    assert server.get("/upstream/m/x", headers=evil).status == 403

    # Same origin, an allowed origin, and plain clients (no Origin) are fine.
    chat = "/v1/chat/completions"
    assert (
        server.post(
            chat,
            chat_body("m"),
            headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"},
        ).status
        == 200
    )
    assert (
        server.post(
            chat, chat_body("m"), headers={"Origin": "http://ui.example", "Sec-Fetch-Site": "cross-site"}
        ).status
        == 200
    )
    assert server.get("/unload").status == 200

    # DNS rebinding: a name that is not ours is refused everywhere but /health.
    for path in ("/running", "/v1/models", "/logs"):
        assert server.get(path, headers={"Host": "evil.example"}).status == 403, path
    resp = server.post("/v1/chat/completions", chat_body("m"), headers={"Host": f"evil.example:{port}"})
    assert resp.status == 403 and "Host" in resp.json()["error"]["message"]
    assert server.get("/health", headers={"Host": "evil.example"}).status == 200
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "llm.internal", f"[::1]:{port}"):
        assert server.get("/running", headers={"Host": host}).status == 200, host


def test_with_api_keys_a_keyed_cross_site_request_is_allowed(serve):
    server = serve({"apiKeys": [API_KEY], "models": {"m": model(upstream_cmd("m"))}})
    resp = server.post(
        "/v1/chat/completions",
        chat_body("m"),
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Origin": "http://any.example",
            "Sec-Fetch-Site": "cross-site",
        },
    )
    assert resp.status == 200


# -- 10. no secrets on operator endpoints -----------------------------------------------------

SECRET = "s3cr3t-token-9f8e7d"


def test_env_values_are_redacted_from_running_and_logs(serve, monkeypatch):
    monkeypatch.setenv("LLAMASWAP_TEST_SECRET", SECRET)
    cmd = shell_cmd(f"echo using key ${{env.LLAMASWAP_TEST_SECRET}}; exec {upstream_cmd('m')}")
    server = serve({"models": {"m": model(cmd)}})
    assert server.chat("m").status == 200
    entry = server.running()["m"]
    assert SECRET not in json.dumps(entry)
    assert "${env.LLAMASWAP_TEST_SECRET}" in entry["cmd"]
    server.wait(lambda: "using key" in server.get("/logs").body.decode(), "the upstream's output in /logs")
    logs = server.get("/logs").body.decode()
    assert SECRET not in logs and "using key ${env.LLAMASWAP_TEST_SECRET}" in logs
    with raw_socket(server) as sock:
        sock.sendall(b"GET /logs/stream/m HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        seen = b""
        while b"using key" not in seen:
            seen += sock.recv(65536)
    assert SECRET.encode() not in seen
    assert SECRET not in server.log()


def test_a_failed_start_tells_the_client_the_reason_not_the_upstreams_output(serve):
    server = serve(
        {
            "models": {
                "broken": {
                    "cmd": shell_cmd("echo 'password=hunter2 leaked'; exit 3"),
                    "proxy": "http://127.0.0.1:9",
                }
            }
        }
    )
    resp = server.chat("broken")
    assert resp.status == 500
    message = resp.json()["error"]["message"]
    assert "exited prematurely" in message and "exit code 3" in message, message
    assert "hunter2" not in message
    assert "password=hunter2 leaked" in server.get("/logs").body.decode()
