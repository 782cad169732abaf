"""Start `LLAMASWAP serve` (the built-in demo) on a free port, as a user would, and check that
/v1/models lists the demo's models and a chat request is answered; then SIGTERM, exit 0.
Standard library only: it runs in a fresh virtualenv without the test dependencies."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request

DEADLINE = 60.0


def main(llamaswap: str) -> int:
    proc = subprocess.Popen(
        [llamaswap, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/",
    )
    assert proc.stdout is not None
    out, url = b"", None
    end = time.monotonic() + DEADLINE
    while url is None:
        if time.monotonic() > end or proc.poll() is not None:
            print(f"serve printed no URL: {out!r}", file=sys.stderr)
            proc.kill()
            return 1
        if select.select([proc.stdout], [], [], 1.0)[0]:
            out += os.read(proc.stdout.fileno(), 4096)
            m = re.search(rb"on (http://127\.0\.0\.1:\d+) ", out)
            url = m.group(1).decode() if m else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/v1/models", timeout=DEADLINE) as resp:
            ids = [m["id"] for m in json.loads(resp.read())["data"]]
        assert ids == ["chat-large", "chat-small", "embed"], ids
        body = json.dumps(
            {"model": "chat-small", "messages": [{"role": "user", "content": "hello"}]}
        ).encode()
        req = urllib.request.Request(url + "/v1/chat/completions", body, {"Content-Type": "application/json"})
        with opener.open(req, timeout=DEADLINE) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["content"].endswith("You said: hello"), answer
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(DEADLINE)
    assert code == 0, code
    print(f"serve from the wheel: ok ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
