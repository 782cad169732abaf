"""`Expect: 100-continue` on the routes aiohttp serves (not the fast front's): a request the
gate refuses is answered at its head, before the client uploads anything, and the connection
closes; one the gate lets pass is told to continue and answered. Real serve, raw sockets."""

from __future__ import annotations

import json
import socket

from serve_support import API_KEY, DEADLINE, model, upstream_cmd


def head(path: str, length: int, extra: str = "", host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n{extra}\r\n"
    ).encode()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=DEADLINE)


def read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """The next response head off the socket, and what followed it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full head: {buf!r}"
        buf += chunk
    first, rest = buf.split(b"\r\n\r\n", 1)
    return first + b"\r\n\r\n", rest


def read_until_closed(sock: socket.socket, buf: bytes) -> bytes:
    while chunk := sock.recv(65536):
        buf += chunk
    return buf


def test_an_operator_route_without_the_api_key_is_401_before_the_upload_and_closes(api_server):
    body = b"{}"
    with connect(api_server.url) as sock:
        sock.sendall(head("/api/models/unload", len(body)))
        first, rest = read_head(sock)
        assert first.startswith(b"HTTP/1.1 401 "), first  # no 100 Continue first
        assert b"connection: close" in first.lower()
        # The answer is the usual JSON error, then the server closes: it never waits for the
        # body the client was told not to send.
        answer = json.loads(read_until_closed(sock, rest))
        assert "unauthorized" in json.dumps(answer)


def test_an_operator_route_with_the_api_key_gets_100_continue_then_its_answer(api_server):
    body = b"{}"
    with connect(api_server.url) as sock:
        sock.sendall(head("/api/models/unload", len(body), f"Authorization: Bearer {API_KEY}\r\n"))
        first, rest = read_head(sock)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        # The unload handler does not read the body: its answer may follow the 100 at once.
        answer_head, _ = read_head(sock, rest)
        assert answer_head.startswith(b"HTTP/1.1 200 "), answer_head


def test_a_foreign_host_is_403_before_the_upload_without_api_keys(serve):
    server = serve({"healthCheckTimeout": 30, "models": {"m": model(upstream_cmd("m"))}})
    with connect(server.url) as sock:
        sock.sendall(head("/api/models/unload", 2, host="evil.example"))
        first, rest = read_head(sock)
        assert first.startswith(b"HTTP/1.1 403 "), first
        assert b"connection: close" in first.lower()
        read_until_closed(sock, rest)
    with connect(server.url) as sock:  # the same request from a local Host continues
        sock.sendall(head("/api/models/unload", 2))
        first, rest = read_head(sock)
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        answer_head, _ = read_head(sock, rest)
        assert answer_head.startswith(b"HTTP/1.1 200 "), answer_head
