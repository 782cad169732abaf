"""The fast front (runtime/fastserver.py) at the wire: framing, keep-alive, pipelining, chunked
request bodies, hand-off to aiohttp (upgrades, other routes, anything llhttp refuses),
smuggling attempts, limits and slow clients. One real `llamaswap serve` over real sockets, the
fake upstream behind it; the upstream's own request log shows what reached it.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_support import API_KEY, DEADLINE, ServeFactory, model, upstream_cmd
from support.upstream import http

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.fastserver import MAX_HEAD, Request, early_models, split_head

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    factory = ServeFactory(tmp_path_factory.mktemp("fastserver"))
    srv = factory(
        {
            "healthCheckTimeout": 30,
            "server": {"maxBodyBytes": MAX_BODY, "headerTimeout": 1, "bodyTimeout": 1, "maxConnections": 8},
            "models": {"m": model(upstream_cmd("m"))},
        }
    )
    assert srv.chat("m").status == 200  # the upstream runs from here on
    try:
        yield srv
    finally:
        factory.finish()


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=DEADLINE)


class Reader:
    """HTTP/1.1 responses read one after another off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.last_head = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def closed(self) -> bool:
        """True when the server closed the connection (after what is buffered)."""
        try:
            return not self.buf and not self._fill()
        except (ConnectionResetError, TimeoutError):
            return True

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before a response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.last_head = head
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:
            return self.response()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body, self.buf = body + self.buf[:size], self.buf[size + 2 :]
                if size == 0:
                    return status, headers, body
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body


def chat(content: str = "hi") -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def upstream_log(server) -> list[dict]:
    resp = http("GET", server.upstream_url("m") + "/debug/requests")
    assert resp.status == 200
    return resp.json()["requests"]


def chats_seen(server) -> list[str]:
    return [
        r["json"]["messages"][0]["content"]
        for r in upstream_log(server)
        if r["path"] == "/v1/chat/completions" and r["json"]
    ]


def test_keep_alive_and_pipelined_requests_are_answered_in_order(server):
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(post("/v1/chat/completions", chat("one")))
        status, _, body = r.response()
        assert status == 200 and b"one" in body
        # Pipelined in one write: fast, fast, then routes aiohttp serves (hand-off mid-connection).
        sock.sendall(
            post("/v1/chat/completions", chat("two"))
            + get("/v1/models")
            + post("/v1/chat/completions", chat("three"))
            + get("/running")
            + post("/v1/chat/completions", chat("four"))
        )
        answers = [r.response() for _ in range(5)]
        assert [a[0] for a in answers] == [200] * 5
        assert b"two" in answers[0][2] and b"three" in answers[2][2] and b"four" in answers[4][2]
        assert json.loads(answers[1][2])["object"] == "list"
        assert "running" in json.loads(answers[3][2])
    assert chats_seen(server)[-4:] == ["one", "two", "three", "four"]


def test_a_body_split_across_writes_and_expect_100_continue(server):
    body = chat("split")
    with connect(server) as sock:
        r = Reader(sock)
        head = post("/v1/chat/completions", b"", "Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)
        )
        sock.sendall(head)
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        for i in range(0, len(body), 7):
            sock.sendall(body[i : i + 7])
        status, _, answer = r.response()
        assert status == 200 and b"split" in answer
    assert chats_seen(server)[-1] == "split"


def assert_kept_or_closed(sock: socket.socket, r: Reader, version: str, kept: bool) -> None:
    """After an answer: a kept connection serves another request; otherwise it is closed."""
    if kept:
        sock.sendall(
            f"GET /health HTTP/{version}\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n".encode()
        )
        assert r.response()[0] == 200
    else:
        assert r.closed()


def expect_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n{extra}\r\n"
    ).encode()


def first_head(sock: socket.socket) -> bytes:
    """The first response head the server sends (a 100 Continue counts as one)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_expect_100_continue_refused_at_its_head_gets_no_100_and_the_connection_closes(server):
    # A body over maxBodyBytes is refused from its Content-Length: the client is told before
    # it uploads anything (no 100 Continue), and the connection ends with the answer because
    # the client may never send the body it announced.
    with connect(server) as sock:
        sock.sendall(expect_head("/v1/chat/completions", MAX_BODY * 10))
        head = first_head(sock)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert b"connection: close" in head.lower()
        r = Reader(sock)
        r.buf = head.split(b"\r\n\r\n", 1)[1]
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(r.buf) < length:
            assert r._fill()
        r.buf = r.buf[length:]
        assert r.closed()


def test_expect_100_continue_without_the_api_key_is_401_before_any_upload(api_server):
    host, port = api_server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x"}]}).encode()
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(expect_head("/v1/chat/completions", len(body)))
        head = first_head(sock)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b"connection: close" in head.lower()
    # With the key, the same request is asked for its body and answered.
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(expect_head("/v1/chat/completions", len(body), f"Authorization: Bearer {API_KEY}\r\n"))
        assert first_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = Reader(sock).response()
        assert status == 200 and json.loads(answer)["object"] == "chat.completion"


def test_a_chunked_request_body_is_forwarded_whole_and_the_connection_closes_after(server):
    body = chat("chunked")
    parts = [body[:10], body[10:25], body[25:]]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + wire
            + get("/v1/models")  # not read: the connection closes
        )
        status, headers, answer = r.response()
        assert status == 200 and b"chunked" in answer
        assert headers.get("connection", "").lower() == "close"
        assert r.closed()
    last = upstream_log(server)[-1]
    assert last["json"]["messages"][0]["content"] == "chunked" and last["body_length"] == len(body)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",  # CL.TE
        b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",  # TE.CL
        b"Content-Length: 6\r\nContent-Length: 40\r\n",  # duplicate, different
        b"Content-Length: -6\r\n",
        b"Content-Length: 6 6\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Content-Length: 6\r\nContent-Length: 6\r\n",  # duplicate, same value
        b"Content-Length: 6\r\n 40\r\n",  # obs-fold: a folded Content-Length
        b"X-Folded: a\r\n\tContent-Length: 40\r\n",  # obs-fold hiding a Content-Length
        b"Content-Length : 6\r\n",  # whitespace before the colon
        b"Content-Length: +6\r\n",
    ],
)
def test_smuggling_framings_are_refused_and_nothing_extra_reaches_the_upstream(server, framing):
    before = len(upstream_log(server))
    smuggled = b"0\r\n\r\n" + post("/v1/chat/completions", chat("smuggled"))
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + framing
            + b"\r\n"
            + smuggled
        )
        status, _, _ = r.response()
        assert status == 400
        assert r.closed()
    assert "smuggled" not in chats_seen(server)
    assert len(upstream_log(server)) == before


def test_bare_lf_heads_and_garbage_are_answered_by_aiohttp_as_before(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 2\n\n{}")
        data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.0 400 Bad Request\r\n"), data
    with connect(server) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert "bad HTTP request from 127.0.0.1" in server.log()


def test_a_tls_handshake_on_the_plain_port_is_refused_at_once_and_a_leading_crlf_is_not(server):
    """`https://` to a plain-HTTP port: the ClientHello never completes a head, so it used to
    wait for server.headerTimeout (here 1 s, then 408; by default 60 s). No request starts
    with such a byte: 400 at once. The empty line a client may send before a request line
    (RFC 9112 2.2) still starts a request."""
    hello = bytes.fromhex("160301020001") + bytes.fromhex("0001fc0303") + bytes(range(32))  # no CRLF
    with connect(server) as sock:
        sock.sendall(hello)
        data = sock.recv(65536)
        # 400, not the header timeout's 408: refused on its first byte.
        assert data.startswith(b"HTTP/1.0 400 Bad Request\r\n"), data
        assert Reader(sock).closed()
    with connect(server) as sock:
        sock.sendall(b"\r\n" + get("/v1/models", "Connection: close\r\n"))
        status, _, body = Reader(sock).response()
        assert status == 200 and b'"data"' in body


def test_an_upgrade_request_is_handed_to_aiohttp(server):
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            get(
                "/v1/models",
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            )
        )
        status, _, body = r.response()
        # aiohttp's route is plain HTTP: it answers the list (no switch of protocols).
        assert status == 200 and json.loads(body)["object"] == "list"


def test_a_declared_oversized_body_is_413_and_the_client_reads_it_while_still_sending(server):
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY * 10)
        )
        sock.sendall(b"x" * MAX_BODY * 2)  # keeps sending: the answer is not lost
        status, _, body = r.response()
        assert status == 413 and b"maxBodyBytes" in body
        sock.sendall(b"x" * MAX_BODY * 8)  # the rest: drained, then the connection closes
        assert r.closed()


def test_a_body_growing_past_the_limit_in_chunks_is_413(server):
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        block = b"y" * 1024
        for _ in range(MAX_BODY // 1024 + 2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        status, _, body = r.response()
        assert status == 413 and b"maxBodyBytes" in body


def test_slow_head_and_slow_body_get_408_and_an_idle_connection_is_kept_within_bounds(server):
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        r = Reader(sock)
        status, _, body = r.response()
        assert status == 408 and b"headerTimeout" in body
        assert r.closed()
    with connect(server) as sock:
        sock.sendall(post("/v1/chat/completions", chat("slow"))[:-5])  # the last bytes never come
        r = Reader(sock)
        status, _, body = r.response()
        assert status == 408 and b"bodyTimeout" in body
        assert r.closed()
    assert time.monotonic() - started < 15
    assert "slow" not in chats_seen(server)


def test_http_10_without_keep_alive_is_answered_then_closed(server):
    body = chat("ten")
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, answer = r.response()
        assert status == 200 and b"ten" in answer
        assert r.closed()


def test_a_small_answer_is_one_aiohttp_shaped_head_and_headers_pass_through_as_bytes(server):
    """Proxied answers are written by the front itself (bytes, no aiohttp Response): the head
    must still be what aiohttp wrote, and both heads pass through byte for byte minus the
    hop-by-hop headers."""
    hop = "Connection: keep-alive, X-Hop\r\nX-Hop: drop me\r\nKeep-Alive: timeout=5\r\nX-Note: café\r\n"
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(post("/v1/chat/completions", chat("raw"), hop))
        status, headers, body = r.response()
        raw_head = r.last_head
        assert status == 200 and b"raw" in body and json.loads(body)["model"]
        lines = raw_head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
        for name in (b"content-length", b"content-type", b"date", b"server", b"x-upstream-name"):
            assert names.count(name) == 1, (name, raw_head)
        assert int(headers["content-length"]) == len(body)
        assert headers["x-upstream-name"] == "m" and headers["server"].startswith("Python/")
        assert headers["date"].endswith(" GMT") and len(headers["date"]) == 29
        assert b"transfer-encoding" not in names and b"connection" not in names and b"keep-alive" not in names
        # Kept alive: a second request on the same connection.
        sock.sendall(post("/v1/chat/completions", chat("again")))
        assert r.response()[0] == 200
    seen = [q for q in upstream_log(server) if q["path"] == "/v1/chat/completions"][-2]
    assert seen["json"]["messages"][0]["content"] == "raw"
    assert seen["headers"]["x-note"] == "café"  # the bytes the client sent, not re-encoded
    assert "x-hop" not in seen["headers"] and "keep-alive" not in seen["headers"]
    assert seen["headers"].get("connection", "keep-alive").lower() == "keep-alive"


@pytest.mark.parametrize(
    "version, connection, answered, kept",
    [("1.0", "keep-alive", "keep-alive", True), ("1.1", "close", "close", False), ("1.0", None, None, False)],
)
def test_the_answer_says_what_happens_to_the_connection(server, version, connection, answered, kept):
    body = chat("conn")
    extra = f"Connection: {connection}\r\n" if connection else ""
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            f"POST /v1/chat/completions HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )
        status, headers, answer = r.response()
        assert status == 200 and b"conn" in answer
        assert r.last_head.startswith(f"HTTP/{version} 200 OK\r\n".encode())
        assert headers.get("connection") == answered
        assert_kept_or_closed(sock, r, version, kept)


def stream_chat(content: str) -> bytes:
    return json.dumps(
        {"model": "m", "stream": True, "tokens": 3, "messages": [{"role": "user", "content": content}]}
    ).encode()


def test_an_event_stream_is_relayed_chunked_then_the_connection_is_kept(server):
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(post("/v1/chat/completions", stream_chat("flow")))
        status, headers, body = r.response()
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
        assert headers["x-accel-buffering"] == "no" and headers["x-upstream-name"] == "m"
        names = [line.split(b":", 1)[0].lower() for line in r.last_head.split(b"\r\n")[1:]]
        assert names.count(b"transfer-encoding") == 1 and names.count(b"x-accel-buffering") == 1
        events = [e for e in body.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]" and len(events) == 3 + 2  # tokens, finish, [DONE]
        sock.sendall(post("/v1/chat/completions", chat("after")))  # the 0-chunk ended it cleanly
        status, _, answer = r.response()
        assert status == 200 and b"after" in answer


def test_an_event_stream_to_an_http_10_client_ends_with_the_connection(server):
    body = stream_chat("old")
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        while b"\r\n\r\n" not in r.buf:
            assert r._fill()
        head, rest = r.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.0 200 OK\r\n")
        assert b"transfer-encoding" not in head.lower() and b"connection: keep-alive" not in head.lower()
        while r._fill():  # no framing: the body ends when the server closes
            pass
        assert r.buf.rstrip().endswith(b"data: [DONE]")


def test_the_connection_cap_counts_fast_and_handed_off_connections_together(server):
    held = [connect(server) for _ in range(8)]
    try:
        for i, sock in enumerate(held):  # half served by the front, half handed to aiohttp
            sock.sendall(get("/health" if i % 2 else "/running"))
            assert Reader(sock).response()[0] == 200
        with connect(server) as extra:
            r = Reader(extra)
            status, headers, body = r.response()
            assert status == 503 and b"too many connections" in body and headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    server.wait(lambda: server.get("/health").status == 200, "a slot to be free again")


def test_a_client_that_leaves_cancels_its_request(server):
    before = len(upstream_log(server))
    with connect(server) as sock:
        sock.sendall(post("/v1/chat/completions", chat("gone"))[:-3])
    # Nothing half-sent is forwarded, and the server goes on serving.
    assert server.chat("m").status == 200
    assert "gone" not in chats_seen(server)
    assert len(upstream_log(server)) == before + 1


def test_early_models_answers_only_what_every_gate_would_pass():
    plan = compile_text(
        "models:\n  a:\n    cmd: x --port ${PORT}\n    proxy: http://127.0.0.1:${PORT}\n", "c.yaml"
    )
    answer = early_models(plan, 1.0)

    def req(host: str, path: str = "/v1/models") -> Request:
        return _request(path, {"Host": host})

    got = answer(req("127.0.0.1:8080"))
    assert got is not None and got.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["data"][0]["id"] == "a"
    assert answer(req("localhost")) is not None
    assert answer(req("evil.example")) is None  # the Host check may refuse it: the app decides
    assert answer(req("127.0.0.1", "/running")) is None
    keyed = compile_text(
        "apiKeys: [k]\nmodels:\n  a:\n    cmd: x --port ${PORT}\n    proxy: http://127.0.0.1:${PORT}\n",
        "c.yaml",
    )
    assert early_models(keyed, 1.0)(req("127.0.0.1")) is None


def _request(path: str, headers: dict[str, str]) -> Request:
    from multidict import CIMultiDict, CIMultiDictProxy

    from llamaswap.runtime import fastserver

    class _NoConn:
        front = type("F", (), {"app": None})()
        peer = None

    return Request(
        _NoConn(),  # type: ignore[arg-type]
        "GET",
        path,
        CIMultiDictProxy(CIMultiDict(headers)),
        fastserver.HTTP11,
        True,
        False,
    )


def test_serve_listens_before_the_web_framework_is_imported():
    """What `serve` runs before it binds (the CLI, compiling, the front) imports no aiohttp, so
    /v1/models is answered while aiohttp loads (bench/startup.py measures it)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import llamaswap.cli, llamaswap.runtime.serve, llamaswap.runtime.fastserver\n"
        "import llamaswap.runtime.sources, llamaswap.runtime.logs, llamaswap.runtime.reaper\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_many_headers_within_the_head_limit_are_served_and_a_head_past_it_is_refused(server):
    body = chat("many")
    # ~18 kB in 90 lines: under MAX_HEAD, and under the fake upstream's own limit (aiohttp's, 128)
    many = "".join(f"X-Extra-{i}: {'v' * 200}\r\n" for i in range(90))
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(post("/v1/chat/completions", body, many))
        status, _, answer = r.response()
        assert status == 200 and b"many" in answer, answer
    seen = upstream_log(server)[-1]
    assert seen["headers"].get("x-extra-89") == "v" * 200
    before = len(upstream_log(server))
    huge = f"X-Huge: {'v' * (MAX_HEAD + 10)}\r\n"  # past MAX_HEAD: aiohttp's, whose line limit refuses it
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(post("/v1/chat/completions", chat("huge"), huge))
        status, _, _ = r.response()
        assert status in (400, 431)
    assert len(upstream_log(server)) == before


# -- split_head: the one-pass head reader, against llhttp ------------------------------------


class _Llhttp:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))


def _llhttp(head: bytes):
    import httptools

    h = _Llhttp()
    p = httptools.HttpRequestParser(h)
    try:
        p.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None
    return h, p


def test_split_head_reads_a_plain_head_and_leaves_everything_unusual_to_llhttp():
    head = (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"X-Empty:\r\nX-Tab: a\tb\r\nContent-Length: 12\r\nConnection: Keep-Alive\r\n\r\n"
    )
    split = split_head(head)
    assert split is not None
    assert split.url == b"/v1/chat/completions?x=1" and split.length == 12 and split.keep_alive
    assert split.headers[3] == (b"X-Tab", b"a\tb") and split.headers[2] == (b"X-Empty", b"")
    assert split_head(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").keep_alive is False  # type: ignore[union-attr]
    assert split_head(b"GET / HTTP/1.1\r\nConnection: x, close\r\n\r\n").keep_alive is False  # type: ignore[union-attr]
    for odd in (
        b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
        b"GET / HTTP/1.1\r\nA : b\r\n\r\n",  # whitespace before the colon
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",  # a control character in a value
        b"GET / HTTP/1.1\r\nA: b \r\n\r\n",  # trailing whitespace
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
        b"GET / HTTP/2.0\r\nA: b\r\n\r\n",
        b"GET /a\x7fb HTTP/1.1\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
    ):
        assert split_head(odd) is None, odd


_NAME = st.text(alphabet="abcXYZ-_!~0123456789", min_size=1, max_size=8)
_VALUE = st.binary(max_size=12).filter(lambda v: b"\r" not in v and b"\n" not in v)


@given(
    version=st.sampled_from([b"1.0", b"1.1"]),
    target=st.text(alphabet="/abz09?=&%~.-+", min_size=1, max_size=12),
    headers=st.lists(
        st.tuples(
            st.one_of(_NAME, st.sampled_from(["Content-Length", "Connection", "content-length"])),
            st.one_of(_VALUE, st.sampled_from([b"12", b"0", b"close", b"keep-alive", b" 7", b"x, Close"])),
        ),
        max_size=6,
    ),
)
@settings(max_examples=400, deadline=None)
def test_whatever_split_head_accepts_llhttp_reads_the_same(version, target, headers):
    head = b"POST " + target.encode() + b" HTTP/" + version + b"\r\n"
    head += b"".join(n.encode() + b":" + v + b"\r\n" for n, v in headers) + b"\r\n"
    split = split_head(head)
    if split is None:
        return
    parsed = _llhttp(head)
    assert parsed is not None, head
    h, p = parsed
    assert split.url == h.url and split.headers == h.headers
    assert split.version == tuple(int(x) for x in p.get_http_version().split("."))
    if split.length:  # llhttp resets its flags once a bodyless message is complete (see below)
        assert split.keep_alive == p.should_keep_alive()
    lengths = [v for n, v in h.headers if n.lower() == b"content-length"]
    assert split.length == (int(lengths[0]) if lengths else None)


@pytest.mark.parametrize("version, connection, kept", [("1.1", "close", False), ("1.0", "keep-alive", True)])
def test_a_bodyless_request_gets_the_connection_it_asked_for(server, version, connection, kept):
    # llhttp forgets a bodyless message's Connection header once the message is complete (a
    # GET with "Connection: close" was kept open); split_head reads it.
    with connect(server) as sock:
        r = Reader(sock)
        sock.sendall(
            f"GET /health HTTP/{version}\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n".encode()
        )
        assert r.response()[0] == 200
        assert_kept_or_closed(sock, r, version, kept)


# -- Headers: the request head as handlers read it, against a CIMultiDict --------------------


@given(
    headers=st.lists(
        st.tuples(
            st.one_of(_NAME, st.sampled_from(["Host", "host", "HOST", "Content-Type", "X-Dup"])),
            st.one_of(_VALUE, st.sampled_from([b"a", b"caf\xc3\xa9", b"\xff\xfe", b""])),
        ),
        max_size=8,
    ),
    probe=st.one_of(
        _NAME, st.sampled_from(["host", "CONTENT-TYPE", "x-dup", "Missing", "caf\u00e9", "\u2603"])
    ),
)
@settings(max_examples=300, deadline=None)
def test_headers_answer_as_the_multidict_of_the_same_head(headers, probe):
    from multidict import CIMultiDict

    from llamaswap.runtime.fastserver import Headers

    raw = [(n.encode(), v) for n, v in headers]
    want = CIMultiDict(
        (n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in raw
    )
    head = b"GET / HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in raw) + b"\r\n"
    split = split_head(head)
    indexed = [Headers(raw)] + ([Headers(split.headers, split.first)] if split is not None else [])
    for got in indexed:
        assert got.get(probe) == want.get(probe)
        assert got.get(probe, "d") == want.get(probe, "d")
        assert (probe in got) == (probe in want)
        assert got.getall(probe, []) == want.getall(probe, [])
        assert list(got.items()) == list(want.items()) and len(got) == len(want)
        assert got == want and dict(got) == dict(want)
        if probe in want:
            assert got[probe] == want[probe]
        else:
            with pytest.raises(KeyError):
                got[probe]


def test_the_gate_reads_the_raw_head_case_insensitively(server):
    # The request path asks for single headers (Host, Content-Type, Upgrade ...): they come
    # from the head's own bytes, whatever their case; the upstream still gets every header.
    for host, want in (("evil.example", 403), ("127.0.0.1", 200)):
        sock = connect(server)
        with sock:
            body = chat("odd-case")
            sock.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nhOsT: {host}\r\ncontent-TYPE: application/json\r\n"
                f"X-Dup: one\r\nX-Dup: two\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status, _, _ = Reader(sock).response()
        assert status == want, host
    seen = [
        r
        for r in upstream_log(server)
        if r.get("json", {}).get("messages", [{}])[0].get("content") == "odd-case"
    ]
    assert (
        len(seen) == 1
        and seen[0]["headers"]["x-dup"]
        and seen[0]["headers"]["content-type"] == "application/json"
    )
