"""Make the web UI screenshots in docs/ui/ (1280x800, one per page).

Starts `llamaswap serve` on a small config of fake upstreams (in a temporary directory, with
its own activity store), sends some traffic so every page has something to show, and takes
each page with headless Chromium (Debian's `chromium`, driven by Playwright).

    python docs/ui/make_screenshots.py            # writes docs/ui/*.png
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

OUT = Path(__file__).resolve().parent
PAGES = ("models", "live", "decisions", "activity", "logs", "playground", "config")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def upstream(name: str, *, startup: float = 0.3, token_delay: float = 0.0) -> str:
    cmd = [
        sys.executable,
        "-m",
        "llamaswap",
        "fake-upstream",
        "--host",
        "127.0.0.1",
        "--port",
        "PORT",
        "--name",
        name,
        "--startup-delay",
        str(startup),
    ]
    if token_delay:
        cmd += ["--token-delay", str(token_delay)]
    return shlex.join(cmd).replace("PORT", "${PORT}")


CONFIG = {
    "healthCheckTimeout": 30,
    "sendLoadingState": True,
    "models": {
        "chat-small": {
            "cmd": upstream("chat-small", token_delay=0.02),
            "proxy": "http://127.0.0.1:${PORT}",
            "name": "Small chat model",
            "aliases": ["small"],
            "ttl": 600,
        },
        "coder": {
            "cmd": upstream("coder", startup=2.0, token_delay=0.012),
            "proxy": "http://127.0.0.1:${PORT}",
            "name": "Code model",
            "aliases": ["code"],
        },
        "embed": {"cmd": upstream("embed"), "proxy": "http://127.0.0.1:${PORT}", "name": "Embeddings"},
        "chat-large": {
            "cmd": upstream("chat-large", startup=3.0, token_delay=0.04),
            "proxy": "http://127.0.0.1:${PORT}",
            "name": "Large chat model, runs alone",
            "aliases": ["large"],
            "sendLoadingState": True,
        },
    },
    "matrix": {
        "vars": {"s": "chat-small", "c": "coder", "e": "embed", "l": "chat-large"},
        "evict_costs": {"e": 2},
        "sets": {"duo": "(s | c) & e", "big": "l"},
    },
}


def request(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path,
        data=data,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    with _OPENER.open(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw[:1] in (b"{", b"[") else {}


def chat(url: str, model: str, text: str, stream: bool = True) -> None:
    request(
        url,
        "/v1/chat/completions",
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]},
    )


def main() -> int:
    exe = shutil.which("chromium")
    if exe is None:
        print("needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    import yaml
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["XDG_DATA_HOME"] = str(Path(tmp) / "data")
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamaswap", "serve", str(config), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=tmp,
        )
        try:
            assert proc.stdout is not None
            url = None
            while url is None:
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit("llamaswap serve exited before listening")
                m = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
                url = m.group(1) if m else None
            # Traffic: swaps between the duo set and the large model, activity with token rates.
            for text in ("hello there", "what can run together", "tell me about swaps"):
                chat(url, "small", text)
            for _ in range(2):
                request(url, "/v1/embeddings", {"model": "embed", "input": "some text to embed"})
            chat(url, "code", "write a function")
            chat(url, "large", "a bigger question for the big model")
            chat(url, "chat-small", "back to the small one")
            chat(url, "coder", "and some code again", stream=False)
            chat(url, "small", "one more")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=exe, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for name in PAGES:
                    page.goto(f"{url}/ui/{name}")
                    page.wait_for_selector("body[data-feed=on]")
                    if name == "live":
                        # A swap in progress: the large model takes 3 s to load.
                        threading.Thread(target=chat, args=(url, "large", "hello"), daemon=True).start()
                        page.wait_for_selector("#swaps tr[data-model=chat-large]")
                        page.fill("#whatif-model", "code")
                        page.click("#whatif-form button[type=submit]")
                        page.wait_for_selector("#whatif-answer")
                        page.wait_for_timeout(1200)
                    elif name == "playground":
                        page.wait_for_selector("#play-model option", state="attached")
                        page.select_option("#play-model", "coder")  # not running: shows the loading stream
                        page.fill("#play-input", "What can run next to you?")
                        page.click("#play-send")
                        page.wait_for_selector("#chat .msg.assistant[data-done]")
                    elif name == "logs":
                        page.click('#log-tabs button[data-which="upstream"]')
                        page.wait_for_timeout(500)
                    else:
                        page.wait_for_timeout(600)
                    page.screenshot(path=str(OUT / f"{name}.png"))
                    print(f"wrote {OUT / (name + '.png')}")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
