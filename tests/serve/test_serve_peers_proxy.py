"""Peers through a forward proxy from the environment (HTTP_PROXY, NO_PROXY), end to end.

`llamaswap serve` runs with HTTP_PROXY naming a tiny forward proxy written here (plain HTTP,
absolute-form request targets, one request per connection), on 127.0.0.1 port 0. The peers'
names end in `.invalid`, which no resolver knows: only the proxy (which sends them to a fake
upstream on 127.0.0.1) can reach them, so a 200 proves the request went through it, and a
NO_PROXY name that fails to resolve proves it went direct. An https peer goes through the
same proxy as a CONNECT tunnel (HTTPS_PROXY), to a TLS endpoint whose certificate serve
trusts through SSL_CERT_FILE, as a user's own CA would be trusted.
"""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from serve_support import Serve, ServeFactory, start_serve
from support.upstream import FakeUpstream, start_fake_upstream

pytestmark = pytest.mark.e2e


class ForwardProxy:
    """An HTTP forward proxy: reads one request head, records it, sends the request on in
    origin form (to 127.0.0.1 for `*.invalid` names) with `Connection: close`, and relays
    both ways until the upstream has answered and closed."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[str, dict[str, str]]] = []  # (request line, headers)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return list(self.seen)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            with self.lock:
                self.seen.append((line, headers))
            method, uri, version = line.split(" ")
            if method == "CONNECT":  # a tunnel: answer 200, then relay bytes both ways
                name, _, port = uri.rpartition(":")
                host = "127.0.0.1" if name.endswith(".invalid") else name
                with socket.create_connection((host, int(port)), timeout=10) as upstream:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    if rest:
                        upstream.sendall(rest)
                    relay(client, upstream)
                return
            parts = urlsplit(uri)
            assert parts.scheme == "http" and parts.hostname, line  # absolute form
            host = "127.0.0.1" if parts.hostname.endswith(".invalid") else parts.hostname
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            keep = [
                f"{k}: {v}"
                for k, v in headers.items()
                if k not in ("proxy-authorization", "proxy-connection", "connection")
            ]
            out = "\r\n".join([f"{method} {target} {version}", *keep, "Connection: close", "", ""])
            try:
                upstream = socket.create_connection((host, parts.port or 80), timeout=10)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            with upstream:
                upstream.sendall(out.encode("latin-1") + rest)

                def pump() -> None:
                    try:
                        while chunk := client.recv(65536):
                            upstream.sendall(chunk)
                    except OSError:
                        pass

                threading.Thread(target=pump, daemon=True).start()
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            # The answer is relayed whole, marked as the connection's last.
            ahead, _, abody = answer.partition(b"\r\n\r\n")
            alines = [h for h in ahead.split(b"\r\n") if not h.lower().startswith(b"connection:")]
            client.sendall(b"\r\n".join([*alines, b"Connection: close"]) + b"\r\n\r\n" + abody)

    def close(self) -> None:
        self.sock.close()


def relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join(10)


class TlsFront:
    """A TLS endpoint on 127.0.0.1 (certificate for `secure.invalid`) in front of a plain
    upstream: what an https peer looks like from serve's side."""

    def __init__(self, cert: Path, key: Path, upstream_port: int) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.upstream_port = upstream_port
        self.handshakes = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.handshakes += 1
        with client, socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10) as upstream:
            relay(client, upstream)

    def close(self) -> None:
        self.sock.close()


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / "peer-cert.pem", directory / "peer-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class Setup:
    def __init__(self, serve: Serve, proxy: ForwardProxy, fake: FakeUpstream, tls: TlsFront) -> None:
        self.serve, self.proxy, self.fake, self.tls = serve, proxy, fake, tls


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    factory = ServeFactory(tmp_path_factory.mktemp("peerproxy"))
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    proxy = ForwardProxy()
    fake = start_fake_upstream(name="far")
    cert, key = make_certificate(factory.tmp_path, "secure.invalid")
    tls = TlsFront(cert, key, fake.port)
    try:
        config = factory.write_config(
            {
                "peers": {
                    "far": {"proxy": f"http://peer-a.invalid:{fake.port}", "models": ["m"]},
                    "loop": {"proxy": f"http://127.0.0.1:{fake.port}", "models": ["l"]},
                    "skip": {"proxy": f"http://direct.invalid:{fake.port}", "models": ["s"]},
                    "secure": {"proxy": f"https://secure.invalid:{tls.port}", "models": ["t"]},
                },
            }
        )
        serve = start_serve(
            config,
            cwd=factory.tmp_path,
            env={
                "HTTP_PROXY": f"http://user:pa55word@127.0.0.1:{proxy.port}",
                "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
                "SSL_CERT_FILE": str(cert),
                "NO_PROXY": f"example.org, direct.invalid:{fake.port}",
            },
        )
        factory.started.append(serve)
        yield Setup(serve, proxy, fake, tls)
        serve.pids.discard(fake.pid)  # the peer's pid, seen in its answers: not serve's to stop
        factory.finish()
    finally:
        for server in factory.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
        fake.stop()
        tls.close()
        proxy.close()


def test_a_peer_request_goes_through_the_environment_proxy(setup: Setup):
    resp = setup.serve.chat("far/m", content="via the proxy")
    assert resp.status == 200, resp
    assert resp.headers["X-Upstream-Name"] == "far"
    line, headers = setup.proxy.requests()[-1]
    assert line == f"POST http://peer-a.invalid:{setup.fake.port}/v1/chat/completions HTTP/1.1"
    assert headers["host"] == f"peer-a.invalid:{setup.fake.port}"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"user:pa55word").decode()
    seen = setup.fake.get("/debug/last-request").json()
    assert seen["json"]["model"] == "m" and "via the proxy" in str(seen["json"]["messages"])
    assert "proxy-authorization" not in {k.lower() for k in seen["headers"]}
    # A passthrough GET goes the same way (the fake echoes what it got).
    echoed = setup.serve.get("/upstream/far/m/anything?x=1")
    assert echoed.status == 200 and echoed.headers["X-Upstream-Name"] == "far"
    assert setup.proxy.requests()[-1][0] == (
        f"GET http://peer-a.invalid:{setup.fake.port}/upstream/m/anything?x=1 HTTP/1.1"
    )


def test_loopback_and_no_proxy_peers_go_direct(setup: Setup):
    before = len(setup.proxy.requests())
    # A loopback peer is never proxied (as Go decides): it answers directly.
    loop = setup.serve.chat("loop/l")
    assert loop.status == 200 and loop.headers["X-Upstream-Name"] == "far"
    # A NO_PROXY name goes direct too: nobody resolves it, so the peer is unreachable,
    # and the answer says so (the proxy, which could have reached it, saw nothing).
    skipped = setup.serve.chat("skip/s")
    assert skipped.status == 502, skipped
    message = skipped.json()["error"]["message"]
    assert message.startswith("peer proxy error: peer skip:") and "direct.invalid" in message
    assert len(setup.proxy.requests()) == before
    # The proxy's password never shows in the log.
    assert "pa55word" not in setup.serve.log()


def test_an_https_peer_goes_through_the_proxy_as_a_connect_tunnel(setup: Setup):
    resp = setup.serve.chat("secure/t", content="through the tunnel")
    assert resp.status == 200, resp
    assert resp.headers["X-Upstream-Name"] == "far"
    line, headers = setup.proxy.requests()[-1]
    assert line == f"CONNECT secure.invalid:{setup.tls.port} HTTP/1.1"
    assert setup.tls.handshakes >= 1  # TLS end to end: the proxy saw only the tunnel
    seen = setup.fake.get("/debug/last-request").json()
    assert seen["json"]["model"] == "t" and "through the tunnel" in str(seen["json"]["messages"])
    # A stream comes through the tunnel as it is sent.
    streamed = setup.serve.chat("secure/t", stream=True)
    assert streamed.status == 200 and streamed.body.rstrip().endswith(b"data: [DONE]"), streamed
