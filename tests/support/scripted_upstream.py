"""A scripted raw HTTP/1.1 upstream for the relay tests (standard library only): each request's
path picks a script that writes exact segments; a script that holds the rest of its answer
back waits until someone POSTs /release to the same server (never longer than 30 s).

    python scripted_upstream.py --port PORT

GET /health answers 200.
"""

from __future__ import annotations

import argparse
import socket
import threading

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b'data: {"n":1}\n\n'
SECOND = b'data: {"n":2}\n\n'
DONE = b"data: [DONE]\n\n"
HOLD = 30.0


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


RELEASE = threading.Semaphore(0)


def sse_first_with_head(conn: socket.socket) -> bool:
    """An event stream: head and first event in one segment, the rest once released."""
    conn.sendall(SSE_HEAD + chunk(FIRST))
    if not RELEASE.acquire(timeout=HOLD):
        return False
    conn.sendall(chunk(SECOND) + chunk(DONE) + b"0\r\n\r\n")
    return True


def chunked_first_with_head(conn: socket.socket) -> bool:
    """A chunked answer that is no event stream: head and first chunk in one segment."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"first-part;")
    )
    if not RELEASE.acquire(timeout=HOLD):
        return False
    conn.sendall(chunk(b"second-part") + b"0\r\n\r\n")
    return True


def sse_head_then_close(conn: socket.socket) -> bool:
    conn.sendall(SSE_HEAD)
    return False


def length_head_then_close(conn: socket.socket) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n")
    return False


def chunked_head_then_bad_chunk(conn: socket.socket) -> bool:
    """A chunked answer (no event stream) whose first chunk is not valid chunked framing."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n"
    )
    return False


def chunked_head_then_close(conn: socket.socket) -> bool:
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return False


def small(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def release(conn: socket.socket) -> bool:
    RELEASE.release()
    conn.sendall(small(b"{}"))
    return True


def health(conn: socket.socket) -> bool:
    conn.sendall(small(b'{"status":"ok"}'))
    return True


def echo_body(conn: socket.socket, body: bytes) -> bool:
    """The request body exactly as it arrived (to check it was forwarded byte for byte)."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    return True


PORT = 0  # this server's port (set in main)


def redirect(location: bytes) -> bytes:
    return b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location


def redirect_to_own_origin(conn: socket.socket) -> bool:
    """A redirect built from the Host header the upstream got: its own host and port."""
    conn.sendall(redirect(b"http://127.0.0.1:%d/health?from=redirect" % PORT))
    return True


def redirect_root_relative(conn: socket.socket) -> bool:
    conn.sendall(redirect(b"/health?from=root"))
    return True


def redirect_elsewhere(conn: socket.socket) -> bool:
    conn.sendall(redirect(b"https://example.com/login"))
    return True


def head_of_a_large_file(conn: socket.socket) -> bool:
    """A HEAD answer: the length a GET would have, no body."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 12345\r\n\r\n")
    return True


WITH_BODY = {"/echo-body": echo_body}

SCRIPTS = {
    "/v1/chat/completions": sse_first_with_head,
    "/v1/completions": chunked_first_with_head,
    "/v1/embeddings": sse_head_then_close,
    "/v1/rerank": length_head_then_close,
    "/v1/audio/speech": chunked_head_then_bad_chunk,
    "/v1/images/generations": chunked_head_then_close,
    "/release": release,
    "/large-file": head_of_a_large_file,
    "/redirect-own": redirect_to_own_origin,
    "/redirect-root": redirect_root_relative,
    "/redirect-elsewhere": redirect_elsewhere,
    "/health": health,
}


def serve(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            path = head.split(b" ")[1].decode().split("?")[0]
            if path in WITH_BODY:
                if not WITH_BODY[path](conn, body):
                    return
                continue
            script = SCRIPTS.get(path, health)
            if not script(conn):
                return


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    global PORT
    PORT = args.port
    sock = socket.create_server(("127.0.0.1", args.port))
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
