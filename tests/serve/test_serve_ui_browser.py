"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright for
Python; no browser download), against a real `llamaswap serve` whose models are fake
upstream subprocesses.

Without chromium these tests skip locally; under CI (CI=true, or LLAMASWAP_REQUIRE_BROWSER=1
as `.ci/run` sets) they fail instead, so CI can never pass without having run them. Select them with `-m e2e`, leave them out with
`-m 'not e2e'`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import openai
import pytest
from serve_support import model, shell_cmd, upstream_cmd
from support.upstream import http, pid_alive

pytestmark = pytest.mark.e2e

KEY = "ui-sekrit"
PAGES = ("models", "live", "decisions", "activity", "logs", "playground", "config")
# The element each page draws once its data has arrived.
READY = {
    "models": "#models tbody tr[data-model]",
    "live": "#coexist-graph g.node",
    "decisions": "#decisions",
    "activity": "#activity-stats #stat-requests",
    "logs": "#log-tabs button.active",
    "playground": "#play-model option",
    "config": "#plan-summary",
}
T = 20_000  # ms: generous deadline for things that involve starting an upstream


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true" or os.environ.get("LLAMASWAP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread while
    # it is open, and later tests' asyncio.run() must not find it.
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser tab on one server, recording console errors and every request it sends."""

    def __init__(self, browser, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append((r.method, r.url, r.headers)))

    def open(self, page: str) -> None:
        self.page.goto(f"{self.base}/ui/{page}")
        self.page.wait_for_selector(READY[page], state="attached", timeout=T)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser):
    opened: list[Page] = []

    def open_tab(server) -> Page:
        p = Page(browser, server.url)
        opened.append(p)
        return p

    yield open_tab
    for p in opened:
        p.close()


def three_models(**extra) -> dict:
    """a and b may run together; c runs alone (evicts both)."""
    return {
        "healthCheckTimeout": 30,
        "models": {
            "a": model(upstream_cmd("a"), aliases=["alpha"]),
            "b": model(upstream_cmd("b")),
            "c": model(upstream_cmd("c")),
        },
        "matrix": {"sets": {"pair": "a & b", "alone": "c"}},
        **extra,
    }


def test_every_page_loads_without_console_errors(serve, tab):
    server = serve(three_models(profiles={"coding": {"description": "x", "pins": {"coder": "c"}}}))
    assert server.chat("a").status == 200  # something to show: a decision, an activity row
    t = tab(server)
    for page in PAGES:
        t.open(page)
        t.page.wait_for_selector("body[data-feed=on]", timeout=T)
        assert t.page.locator("#nav a.active").get_attribute("data-page") == page
    t.open("models")
    assert t.page.locator('#models tr[data-model="a"]').get_attribute("data-state") == "ready"
    assert t.page.locator("#profile").is_hidden()  # none active
    assert server.request("PUT", "/api/profiles/active", {"name": "coding"}).status == 200
    t.page.wait_for_selector("#profile:text('profile: coding')", timeout=T)
    assert t.errors == []


def test_an_openai_request_appears_in_activity_within_two_seconds(serve, tab):
    server = serve(three_models())
    t = tab(server)
    t.open("activity")
    t.page.wait_for_selector("body[data-feed=on]", timeout=T)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "one two three"}]
    )
    done = time.monotonic()
    row = t.page.locator('#activity tbody tr[data-model="a"]')
    row.wait_for(timeout=2000)
    assert time.monotonic() - done < 2.0
    assert row.locator("td.tokens-in").inner_text() == str(reply.usage.prompt_tokens)
    assert row.locator("td.tokens-out").inner_text() == str(reply.usage.completion_tokens)
    assert reply.usage.completion_tokens > 0
    assert row.locator("td.tps").inner_text() not in ("", "–")  # from the fake's llama-server timings
    assert t.errors == []


def test_after_a_swap_the_graph_highlights_the_new_running_set(serve, tab):
    server = serve(three_models())
    t = tab(server)
    t.open("live")
    graph = t.page.locator("#coexist-graph")
    assert graph.get_attribute("data-running") == ""
    assert server.chat("a").status == 200
    assert server.chat("b").status == 200
    t.page.wait_for_selector('#coexist-graph[data-running="a,b"]', timeout=T)
    assert t.page.locator("g.node.running").evaluate_all("ns => ns.map(n => n.dataset.model)") == ["a", "b"]
    assert t.page.locator('line.edge.running[data-a="a"][data-b="b"]').count() == 1

    assert server.chat("c").status == 200  # c runs alone: a and b are evicted
    t.page.wait_for_selector('#coexist-graph[data-running="c"]', timeout=T)
    assert t.page.locator("g.node.running").evaluate_all("ns => ns.map(n => n.dataset.model)") == ["c"]
    assert t.page.locator("line.edge.running").count() == 0
    assert "Running now: c" in t.page.locator("#running-set").inner_text()

    # The what-if box: a request for a now would stop c.
    t.page.fill("#whatif-model", "alpha")
    t.page.click("#whatif-form button[type=submit]")
    t.page.wait_for_selector('g.node.target[data-model="a"]', timeout=T)
    assert t.page.locator("g.node.evict").evaluate_all("ns => ns.map(n => n.dataset.model)") == ["c"]
    assert "stop c" in t.page.locator("#whatif-answer").inner_text()

    # An in-flight request is listed with a Cancel button; cancelling it answers its client.
    held = server.chat_call("c", delay=30)
    row = t.page.locator('#inflight-requests tr[data-model="c"]')
    row.wait_for(timeout=T)
    row.locator("button.cancel").click()
    resp = held.response()
    resp.read()
    held.disconnect()
    assert resp.status == 502
    row.wait_for(state="detached", timeout=T)
    assert t.errors == []


def test_unload_from_the_ui_stops_the_process(serve, tab):
    server = serve(three_models(peers={"box": {"proxy": "http://127.0.0.1:9", "models": ["big"]}}))
    assert server.chat("a").status == 200
    pid = server.running()["a"]["pid"]
    assert pid_alive(pid)
    t = tab(server)
    t.open("models")
    row = t.page.locator('#models tr[data-model="a"]')
    row.locator("button.unload").click()
    t.page.wait_for_selector('#models tr[data-model="a"][data-state="stopped"]', timeout=T)
    server.wait(lambda: not pid_alive(pid), f"pid {pid} to be gone")
    assert "a" not in server.running()
    # and loading it again from the UI starts a new process
    assert t.page.locator('#models tr[data-model="a"] a.upstream').count() == 0
    t.page.locator('#models tr[data-model="a"] button.load').click()
    t.page.wait_for_selector('#models tr[data-model="a"][data-state="ready"]', timeout=T)
    assert server.running()["a"]["pid"] != pid
    # A ready model links to its own server (GET /upstream redirects to this page).
    assert t.page.locator('#models tr[data-model="a"] a.upstream').get_attribute("href") == "/upstream/a/"
    # A peer's model is listed with its peer, and offers nothing to load or unload here.
    peer = t.page.locator('#models tr[data-model="box/big"]')
    assert peer.get_attribute("data-state") == "peer" and "on peer box" in peer.inner_text()
    assert peer.locator("button").count() == 0
    assert t.errors == []


def test_the_playground_streams_a_reply_and_shows_the_loading_state(serve, tab):
    server = serve(
        {
            "healthCheckTimeout": 30,
            "models": {
                "slow": model(
                    upstream_cmd("slow", startup_delay=1.0, token_delay=0.15), sendLoadingState=True
                )
            },
        }
    )
    t = tab(server)
    t.open("playground")
    t.page.fill("#play-input", "hello there")
    t.page.click("#play-send")
    reply = t.page.locator("#chat .msg.assistant").last
    loading = reply.locator(".loading")
    loading.wait_for(state="visible", timeout=T)
    assert "llamaswap loading model: slow" in loading.inner_text()
    # While it streams, the reply grows chunk by chunk.
    seen: list[str] = []
    deadline = time.monotonic() + T / 1000
    while reply.get_attribute("data-done") is None and time.monotonic() < deadline:
        text = reply.locator(".content").inner_text()
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        t.page.wait_for_timeout(20)
    assert reply.get_attribute("data-done") == "true", t.page.locator("#play-status").inner_text()
    final = reply.locator(".content").inner_text()
    assert final.endswith("You said: hello there")
    assert len(seen) >= 3 and all(final.startswith(part) for part in seen), seen
    assert "Done!" in loading.inner_text()
    assert "tokens/s" in t.page.locator("#play-status").inner_text()
    assert t.errors == []


def test_the_playground_shows_a_failed_start_as_an_error(serve, tab):
    # With sendLoadingState the stream is under way (200) when the start fails: the error
    # frame before [DONE] must read as an error, not as an empty reply "done in 0.1 s".
    server = serve(
        {
            "models": {
                "broken": model(shell_cmd("echo no GPU >&2; exit 3") + " ${PORT}", sendLoadingState=True)
            }
        }
    )
    t = tab(server)
    t.open("playground")
    t.page.fill("#play-input", "hello")
    t.page.click("#play-send")
    reply = t.page.locator("#chat .msg.assistant").last
    t.page.wait_for_function(
        "() => document.querySelector('#chat .msg.assistant:last-child')?.dataset.done", timeout=T
    )
    status = t.page.locator("#play-status").inner_text()
    assert reply.get_attribute("data-done") == "error", status
    assert "upstream command exited prematurely (exit code 3)" in status, status
    assert "no GPU" not in status  # the upstream's output stays in /logs


def test_with_api_keys_the_ui_asks_once_and_every_api_call_needs_the_key(serve, tab):
    server = serve(three_models(apiKeys=[KEY]))
    server.headers = {"Authorization": f"Bearer {KEY}"}
    assert server.chat("a").status == 200
    t = tab(server)
    t.page.goto(f"{server.url}/ui/models")
    dialog = t.page.locator("#key-dialog")
    dialog.wait_for(state="visible", timeout=T)
    t.page.fill("#key-input", "wrong")
    t.page.click("#key-submit")
    t.page.wait_for_selector("#key-error:not([hidden])", timeout=T)
    t.page.fill("#key-input", KEY)
    t.page.click("#key-submit")
    t.page.wait_for_selector('#models tr[data-model="a"][data-state="ready"]', timeout=T)
    t.page.wait_for_selector("body[data-feed=on]", timeout=T)
    for page in PAGES:  # every page works with the key (and asks no more)
        t.page.click(f'#nav a[data-page="{page}"]')
        t.page.wait_for_selector(READY[page], state="attached", timeout=T)
        assert not dialog.is_visible()
    t.page.click('#nav a[data-page="playground"]')
    t.page.wait_for_selector("#play-model option", state="attached", timeout=T)
    t.page.fill("#play-input", "hi")
    t.page.click("#play-send")
    t.page.wait_for_selector('#chat .msg.assistant[data-done="true"]', timeout=T)

    static = {"/ui", "/ui/", "/favicon.ico"}
    api_calls = {}
    for method, url, headers in t.requests:
        path = urlsplit(url).path
        if path.startswith("/ui/") or path in static:
            continue
        api_calls.setdefault((method, path), []).append(headers.get("authorization"))
    assert {
        ("GET", "/api/events"),
        ("GET", "/api/models"),
        ("GET", "/api/graph"),
        ("GET", "/api/metrics/activity"),
        ("POST", "/v1/chat/completions"),
    } <= set(api_calls)
    refused = []
    for (method, path), sent in sorted(api_calls.items()):
        # after the key was entered every call carried it (before, only the first ones had none)
        assert sent[-1] == f"Bearer {KEY}", (method, path, sent)
        query = next(urlsplit(u).query for m, u, _ in t.requests if m == method and urlsplit(u).path == path)
        body = {"model": "a", "messages": []} if method == "POST" else None
        resp = http(method, f"{server.url}{path}{'?' + query if query else ''}", body, timeout=10)
        refused.append((method, path, resp.status))
    assert all(status == 401 for _, _, status in refused), refused
    # the static shell itself is public: it holds no data
    assert http("GET", f"{server.url}/ui/models").status == 200
    unexpected = [e for e in t.errors if "401" not in e]
    assert unexpected == []
