"""The proxied answer's first bytes at the wire: an upstream that sends its head together with
the first body bytes (one segment), one that holds the rest back, one that closes right after
its head. The upstream is a scripted raw socket server (tests/support/scripted_upstream.py,
the model's cmd) behind one real `llamaswap serve`; the client is a raw socket too, so every
byte and every segment is the test's own.
"""

from __future__ import annotations

import socket
import time

import pytest
from serve_support import DEADLINE, ServeFactory, model, scripted_upstream_cmd
from support.scripted_upstream import DONE, FIRST, SECOND, chunk
from support.upstream import http


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory):
    factory = ServeFactory(tmp_path_factory.mktemp("relay"))
    srv = factory({"healthCheckTimeout": 30, "models": {"m": model(scripted_upstream_cmd())}})
    try:
        yield srv
    finally:
        factory.finish()


def release(srv) -> None:
    """Let the upstream send the rest of the answer it holds back."""
    assert http("POST", srv.upstream_url("m") + "/release", {}).status == 200


def open_request(srv, path: str) -> socket.socket:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
    body = b'{"model":"m","stream":true}'
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def read_until(sock: socket.socket, buf: bytes, marker: bytes) -> bytes:
    deadline = time.monotonic() + DEADLINE
    while marker not in buf:
        assert time.monotonic() < deadline, f"no {marker!r} within {DEADLINE}s: {buf!r}"
        data = sock.recv(65536)
        if not data:
            raise EOFError(f"closed before {marker!r}: {buf!r}")
        buf += data
    return buf


def read_to_close(sock: socket.socket, buf: bytes) -> bytes:
    try:
        while data := sock.recv(65536):
            buf += data
    except ConnectionResetError:
        pass
    return buf


def test_the_first_event_that_came_with_the_head_is_relayed_before_the_upstream_sends_more(relay):
    srv = relay
    sock = open_request(srv, "/v1/chat/completions")
    with sock:
        # The upstream holds the rest back until released: the head and the first event
        # must reach the client by themselves, whole.
        got = read_until(sock, b"", b"\r\n\r\n" + chunk(FIRST))
        assert got.startswith(b"HTTP/1.1 200 OK\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head and b"X-Accel-Buffering: no" in head
        assert body == chunk(FIRST)  # nothing else yet: the upstream has not sent it
        release(srv)
        got = read_until(sock, body, b"0\r\n\r\n")
        # Each event in its own chunk, as the upstream framed them.
        assert got == chunk(FIRST) + chunk(SECOND) + chunk(DONE) + b"0\r\n\r\n"


def test_a_chunked_answer_whose_head_and_first_chunk_share_a_segment(relay):
    srv = relay
    sock = open_request(srv, "/v1/completions")
    with sock:
        got = read_until(sock, b"", chunk(b"first-part;"))
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"application/octet-stream" in head
        assert body == chunk(b"first-part;")
        release(srv)
        got = read_until(sock, body, b"0\r\n\r\n")
        assert got == chunk(b"first-part;") + chunk(b"second-part") + b"0\r\n\r\n"


def test_an_event_stream_upstream_that_closes_after_its_head_ends_with_an_error_event(relay):
    srv = relay
    sock = open_request(srv, "/v1/embeddings")
    with sock:
        got = read_to_close(sock, b"")
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"text/event-stream" in head
    assert b"upstream failed mid-stream" in body and b'"code":"bad_gateway"' in body
    assert not body.endswith(b"0\r\n\r\n")  # aborted, not passed off as complete


def test_an_upstream_that_closes_after_a_content_length_head_is_a_502(relay):
    srv = relay
    sock = open_request(srv, "/v1/rerank")
    with sock:
        got = read_until(sock, b"", b"\r\n\r\n")
        head = got.split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 502 "), got


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/images/generations"])
def test_a_chunked_answer_that_breaks_before_its_first_byte_is_a_502(relay, path):
    """The head of a chunked answer waits for its first body bytes; an upstream that breaks
    before any (bad chunk framing, or a close) costs the client no empty reply: it gets a
    502 saying why, and the access log says 502."""
    srv = relay
    sock = open_request(srv, path)
    with sock:
        got = read_until(sock, b"", b"\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 "), got
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += sock.recv(65536)
    assert b"upstream error (m)" in body, body
    srv.wait(lambda: f"POST {path} m 502" in srv.log(), f"the access log line of {path}")
