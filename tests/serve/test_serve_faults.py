"""Faults a new user's client or upstream brings, found by probing a running serve: each
test names what the client saw before the fix. The upstream is the scripted raw socket
server (tests/support/scripted_upstream.py, the model's cmd) behind one real `llamaswap
serve`; the client is a raw socket or urllib, so every byte is the test's own.
"""

from __future__ import annotations

import gzip
import socket

import pytest
from serve_support import DEADLINE, ServeFactory, model, scripted_upstream_cmd
from support.upstream import http

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    factory = ServeFactory(tmp_path_factory.mktemp("faults"))
    srv = factory({"healthCheckTimeout": 30, "models": {"m": model(scripted_upstream_cmd())}})
    try:
        yield srv
    finally:
        factory.finish()


def test_a_gzip_encoded_body_reaches_the_upstream_byte_for_byte(srv):
    """Before: aiohttp decompressed the body, which went upstream still labelled gzip and
    shorter than its Content-Length: the upstream waited for the rest and the client hung
    (until timeouts.responseHeader, 600 s)."""
    body = gzip.compress(b'{"prompt":"hello"}' * 50)
    resp = http(
        "POST",
        srv.url + "/upstream/m/echo-body",
        body,
        {"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=DEADLINE,
    )
    assert resp.status == 200, resp
    assert resp.body == body


def raw_exchange(srv, request: bytes) -> bytes:
    """Send `request` in one write; read until the server closes or a whole answer is in."""
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf.partition(b"\r\n\r\n")[2]) < _length(buf):
            data = sock.recv(65536)
            if not data:
                break
            buf += data
    return buf


def _length(buf: bytes) -> int:
    for line in buf.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_a_long_query_string_reaches_an_upstream_passthrough(srv):
    """Before: a request line over 8190 bytes on /upstream/<model>/... (any route aiohttp
    serves) was 400 `Got more than 8190 bytes when reading: bytearray(b'/upstream/...')`,
    while the same query on /v1/chat/completions was served."""
    query = "q=" + "a" * 20000
    resp = http("GET", srv.url + "/upstream/m/health?" + query, timeout=DEADLINE)
    assert resp.status == 200, resp
    assert resp.json() == {"status": "ok"}  # the upstream's answer


@pytest.mark.parametrize("path", ["/upstream/m/health", "/v1/chat/completions"])
def test_a_request_target_over_64k_is_414_on_every_route(srv, path):
    """Past 64 KiB a request target is refused with a status and a message that say so,
    on the fast front's routes too (they took any head that came in one segment)."""
    body = b'{"model":"m"}'
    got = raw_exchange(
        srv,
        f"POST {path}?q={'a' * 70000} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    head, _, text = got.partition(b"\r\n\r\n")
    assert b" 414 " in head.split(b"\r\n")[0], got[:200]
    assert text == b"request target longer than 65536 bytes"


def test_a_header_field_over_8k_is_431_saying_so(srv):
    """Before: 400 with aiohttp's `Got more than 8190 bytes when reading: b'aaaa...'`."""
    got = raw_exchange(
        srv, f"GET /upstream/m/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {'a' * 9000}\r\n\r\n".encode()
    )
    head, _, text = got.partition(b"\r\n\r\n")
    assert b" 431 " in head.split(b"\r\n")[0], got[:200]
    assert text == b"request header field longer than 8190 bytes"
    srv.wait(lambda: "request header field longer than 8190 bytes" in srv.log(), "the warning line")


@pytest.mark.parametrize(
    "content_type, body, why",
    [
        ("multipart/form-data", b"RIFF....WAVE", "the multipart/form-data Content-Type names no boundary"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\n\r\n--B--\r\n',
            "the multipart body's model field is empty",
        ),
        (
            "multipart/form-data; boundary=XYZ",
            b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--B--\r\n',
            'the multipart body has no model field (a part with name="model" between the boundaries its'
            " Content-Type names)",
        ),
    ],
)
def test_a_multipart_body_that_names_no_model_says_why(srv, content_type, body, why):
    """Before: each was 400 `no model id could be identified`, which does not tell a
    hand-made request (curl -H 'Content-Type: multipart/form-data' --data-binary @a.wav)
    what is wrong."""
    resp = http(
        "POST", srv.url + "/v1/audio/transcriptions", body, {"Content-Type": content_type}, timeout=DEADLINE
    )
    assert resp.status == 400, resp
    assert resp.json()["error"]["message"] == "no model id could be identified: " + why


@pytest.mark.parametrize(
    "path, location",
    [
        ("/redirect-own", "/upstream/m/health?from=redirect"),
        ("/redirect-root", "/upstream/m/health?from=root"),
        ("/redirect-elsewhere", "https://example.com/login"),
    ],
)
def test_a_passthrough_redirect_stays_under_upstream_model(srv, path, location):
    """Before: the upstream's Location went out as it was, http://127.0.0.1:<its port>/...
    (not llamaswap, unreachable from another machine) or /health (llamaswap's own root)."""
    got = raw_exchange(srv, f"GET /upstream/m{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = got.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 302 "), head
    assert f"\r\nLocation: {location}\r\n" in head + "\r\n", head
    if location.startswith("/"):  # and it leads to the upstream, through llamaswap
        resp = http("GET", srv.url + location, timeout=DEADLINE)
        assert resp.status == 200 and resp.json() == {"status": "ok"}, resp


def test_a_passthrough_head_keeps_the_upstreams_content_length(srv):
    """Before: HEAD /upstream/<model>/file of up to 1 MiB answered without Content-Length (a download
    manager or `curl -I` could not tell the size)."""
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(b"HEAD /upstream/m/large-file HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            assert data, buf
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"\r\nContent-Length: 12345" in head, head
        assert rest == b""
        # No body followed: the connection serves the next request.
        sock.sendall(b"GET /upstream/m/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buf = b""
        while b'{"status":"ok"}' not in buf:
            data = sock.recv(65536)
            assert data, buf
            buf += data
        assert buf.startswith(b"HTTP/1.1 200 "), buf


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"model":"m",\n "messages": [}', "Expecting value: line 2 column 15 (char 28)"),
        (b'{"model":"m","x":"\xff"}', "not valid UTF-8 (byte 0xff at offset 18)"),
    ],
)
def test_a_body_that_is_not_json_says_where(srv, body, message):
    """Before: 400 `invalid JSON body`, with no word on where (a hand-edited request with a
    stray comma, a client that cut a multibyte character in two)."""
    resp = http(
        "POST", srv.url + "/v1/chat/completions", body, {"Content-Type": "application/json"}, timeout=DEADLINE
    )
    assert resp.status == 400, resp
    assert resp.json()["error"]["message"] == "invalid JSON body: " + message


def test_json_sent_as_text_plain_says_which_content_type_to_use(srv):
    """aiohttp's `session.post(url, data=json.dumps(payload))` and a browser's
    `fetch(url, {body: JSON.stringify(payload)})` send text/plain. Before: 400 `no model id
    could be identified`, as if the body had no model."""
    resp = http(
        "POST",
        srv.url + "/v1/chat/completions",
        b'{"model": "m", "messages": []}',
        {"Content-Type": "text/plain; charset=utf-8"},
        timeout=DEADLINE,
    )
    assert resp.status == 400, resp
    assert resp.json()["error"]["message"] == (
        "no model id could be identified: a text/plain body is not read for a model; send JSON"
        " with Content-Type: application/json (or a form, or ?model=)"
    )


def test_json_sent_as_a_form_says_which_content_type_to_use(srv):
    """`curl URL -d '{"model": ...}'` (no -H) sends application/x-www-form-urlencoded. Before:
    400 `no model id could be identified`, as if the model were missing."""
    resp = http(
        "POST",
        srv.url + "/v1/chat/completions",
        b'{"model": "m", "messages": []}',
        {"Content-Type": "application/x-www-form-urlencoded"},
        timeout=DEADLINE,
    )
    assert resp.status == 400, resp
    assert resp.json()["error"]["message"] == (
        "no model id could be identified: the body is JSON but its Content-Type is"
        " application/x-www-form-urlencoded (what curl -d sends); send it with Content-Type: application/json"
    )
