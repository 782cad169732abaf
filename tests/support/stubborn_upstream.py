"""A badly behaved upstream for the process-safety tests (standard library only, so it starts
fast): it can ignore SIGTERM, fork a grandchild that ignores SIGTERM too, fail its health
check, or never answer it.

    python stubborn_upstream.py --port PORT [--ignore-term] [--fork PIDFILE]
                                [--health ok|fail|hang] [--pidfile PIDFILE]

`--pidfile` / `--fork` append one PID per line (its own / the grandchild's), written before
the socket is bound, so a test that sees the port answer knows both PIDs.
Prints `listening on http://127.0.0.1:PORT` once bound. Other paths answer 200 with
`{"stubborn": PID}`.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import sys
import time


def _append(path: str, pid: int) -> None:
    with open(path, "a") as f:
        f.write(f"{pid}\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ignore-term", action="store_true")
    ap.add_argument("--fork", default="")
    ap.add_argument("--health", choices=("ok", "fail", "hang"), default="ok")
    ap.add_argument("--pidfile", default="")
    args = ap.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fork:
        child = os.fork()
        if child == 0:  # the grandchild: ignores SIGTERM, holds nothing, waits forever
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.closerange(3, 256)
            while True:
                signal.pause()
        _append(args.fork, child)
    if args.pidfile:
        _append(args.pidfile, os.getpid())

    health = args.health
    me = os.getpid()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                if health == "hang":
                    time.sleep(3600)
                    return
                self._send(200 if health == "ok" else 503, {"health": health})
            else:
                self._send(200, {"stubborn": me})

        def do_POST(self) -> None:
            # Read the body: closing with unread bytes would reset the connection.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
