"""Peers end to end: two `llamaswap serve` processes on 127.0.0.1, B listing A as a peer.

A serves one fake-upstream model and requires its own API key. B requires another key, has
its own local model, and lists as peers: A (with A's key, and filters), A again under a wrong
key, and a "peer" that accepts connections but never answers (a listening socket nobody
accepts on), with a one-second response-header timeout. One pair of servers per test worker;
every test makes the requests it checks (tests are spread over parallel workers), and the
two that stop a server (A, then B) come last.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest
from serve_support import Serve, ServeFactory, descendants, model, start_serve, upstream_cmd
from support.upstream import free_port, run_async, start_fake_upstream

pytestmark = pytest.mark.e2e

KEY_A = "key-of-a"
KEY_B = "key-of-b"


class Pair:
    def __init__(self, a: Serve, b: Serve, stall_port: int, raw_url: str) -> None:
        self.a, self.b, self.stall_port, self.raw_url = a, b, stall_port, raw_url

    def a_last_request(self) -> dict[str, Any]:
        """What A's upstream received last (asked through A's own passthrough)."""
        resp = self.a.get("/upstream/m/debug/last-request", headers={"Authorization": f"Bearer {KEY_A}"})
        assert resp.status == 200, resp
        return resp.json()

    def wait_activity(self, found: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """B's activity records once one of them is `found` (records are written just after
        the response)."""

        def records() -> list[dict[str, Any]] | None:
            data = self.b.get("/api/metrics/activity?limit=200").json()["data"]
            return data if any(found(r) for r in data) else None

        return self.b.wait(records, "the activity record")

    def forget_peer_pids(self) -> None:
        """B passes its peers' X-Upstream-Pid headers on: keep only B's own processes in the
        set its exit check watches (A's upstream is A's to stop)."""
        self.b.pids = {p for p in self.b.pids if p in descendants(self.b.proc.pid)}

    def a_total(self) -> int:
        """How many requests A's upstream has served."""
        resp = self.a.get("/upstream/m/debug/inflight", headers={"Authorization": f"Bearer {KEY_A}"})
        assert resp.status == 200, resp
        return resp.json()["total"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    factory = ServeFactory(tmp_path_factory.mktemp("peers"))
    stall = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stall.bind(("127.0.0.1", 0))
    stall.listen(16)  # the kernel completes the handshakes; nothing ever reads or answers
    try:
        a_url = f"http://127.0.0.1:{free_port()}"
        raw_url = f"http://127.0.0.1:{free_port()}"
        a_config = factory.write_config(
            {
                "healthCheckTimeout": 30,
                "apiKeys": [KEY_A],
                "models": {"m": model(upstream_cmd("a-m"), aliases=["mm"])},
            },
            name="a.yaml",
        )
        b_config = factory.write_config(
            {
                "healthCheckTimeout": 30,
                "apiKeys": [KEY_B],
                "server": {"maxBodyBytes": 65536},
                "models": {"local": model(upstream_cmd("b-local"))},
                "selectors": {"remote": {"strategy": "pin", "targets": ["a/m"]}},
                "peers": {
                    "a": {
                        "proxy": a_url,
                        "apiKey": KEY_A,
                        "models": ["m", "mm"],
                        "filters": {
                            "stripParams": "secret, nested.drop",
                            "setParams": {"temperature": 0.25},
                            "setParamsByID": {"a/m": {"top_k": 7}},
                        },
                    },
                    "wrongkey": {"proxy": a_url, "apiKey": "not-the-key", "models": ["m"]},
                    # A plain fake upstream as a peer, started by the shutdown test.
                    "raw": {"proxy": raw_url, "models": ["fake"]},
                    "stall": {
                        "proxy": f"http://127.0.0.1:{stall.getsockname()[1]}",
                        "models": ["slow"],
                        "timeouts": {"responseHeader": 1},
                    },
                },
            },
            name="b.yaml",
        )
        # Both start at once (B does not contact A before a request comes).
        with ThreadPoolExecutor(2) as pool:
            started_a = pool.submit(
                start_serve, a_config, cwd=factory.tmp_path, args=("--listen", a_url.removeprefix("http://"))
            )
            started_b = pool.submit(start_serve, b_config, cwd=factory.tmp_path)
            failed = [f.exception() for f in (started_a, started_b) if f.exception() is not None]
            factory.started += [f.result() for f in (started_a, started_b) if f.exception() is None]
        if failed:
            raise failed[0]
        a, b = factory.started
        assert a.url == a_url
        b.headers = {"Authorization": f"Bearer {KEY_B}"}
        pair = Pair(a, b, stall.getsockname()[1], raw_url)
        yield pair
        if b.proc.poll() is None:
            pair.forget_peer_pids()
        factory.finish()
    finally:
        stall.close()
        for server in factory.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


def test_b_lists_the_peer_models(pair: Pair):
    listed = {r["id"]: r for r in pair.b.get("/v1/models").json()["data"]}
    assert {"a/m", "wrongkey/m", "stall/slow", "local"} <= set(listed)
    assert listed["a/m"]["meta"]["llamaswap"]["type"] == "peer"


def test_a_peer_model_answers_with_the_peer_key_and_filters(pair: Pair):
    resp = pair.b.post(
        "/v1/chat/completions",
        {
            "model": "a/m",
            "messages": [{"role": "user", "content": "hi there"}],
            "secret": "s",
            "nested": {"drop": 1, "keep": 2},
        },
        headers={"x-api-key": KEY_B},  # a second credential of the client's: never forwarded
    )
    assert resp.status == 200, resp
    assert resp.headers["X-Upstream-Name"] == "a-m"
    seen = pair.a_last_request()
    body = seen["json"]
    # Filters applied, then the model renamed to the peer's own name for it.
    assert body["model"] == "m" and body["temperature"] == 0.25 and body["top_k"] == 7
    assert "secret" not in body and body["nested"] == {"keep": 2}
    # A accepted B's request, so it carried A's key (A drops its own keys before its
    # upstream); nothing of the client's credentials reached A's upstream.
    assert "authorization" not in seen["headers"] and "x-api-key" not in seen["headers"]
    assert not any(KEY_B in v for v in seen["headers"].values())

    # A bare name that only one peer lists routes too (A knows "mm" as an alias of m);
    # setParamsByID is for "a/m" only. "m" is on two peers: it is no one's.
    bare = pair.b.chat("mm")
    assert bare.status == 200 and bare.headers["X-Upstream-Name"] == "a-m"
    seen = pair.a_last_request()["json"]
    assert seen["model"] == "mm" and seen["temperature"] == 0.25 and "top_k" not in seen
    assert pair.b.chat("m").status == 404

    # /upstream/<peer/model>/... goes to the peer as /upstream/<model>/...
    passthrough = pair.b.get("/upstream/a/m/v1/models")
    assert passthrough.status == 200, passthrough
    assert passthrough.json()["data"][0]["id"] == "a-m"

    # B's scheduler never saw any of it, and B swapped nothing (A did, for itself).
    snap = pair.b.scheduler()
    assert "a/m" not in snap["models"] and "m" not in snap["models"] and not snap["queue"]
    assert all(d["model"] == "local" for d in pair.b.get("/api/decisions").json()["decisions"])


def test_a_selector_resolved_to_a_peer_model_renames_every_body_encoding(pair: Pair):
    # `remote` pins a/m: the peer gets its own name for the model, whichever way the body
    # names it (JSON, urlencoded, multipart: the multipart head is rewritten as it is sent).
    chat = pair.b.chat("remote")
    assert chat.status == 200 and chat.headers["X-Upstream-Name"] == "a-m", chat
    assert pair.a_last_request()["json"]["model"] == "m"
    form = pair.b.post(
        "/v1/audio/speech",
        b"model=remote&input=hi",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 200, form
    assert pair.a_last_request()["body"] == "model=m&input=hi"
    boundary = "peer-boundary"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nremote\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        f"Content-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n"
    ).encode()
    heard = pair.b.post(
        "/v1/audio/transcriptions",
        multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert heard.status == 200 and heard.headers["X-Upstream-Name"] == "a-m", heard
    assert (
        pair.a_last_request()["body"] == multipart.replace(b"\r\n\r\nremote\r\n", b"\r\n\r\nm\r\n").decode()
    )


def test_b_checks_its_own_key_and_body_limit_first(pair: Pair):
    before = pair.a_total()
    unauthorized = pair.b.post(
        "/v1/chat/completions", {"model": "a/m"}, headers={"Authorization": "Bearer nope"}
    )
    assert unauthorized.status == 401
    too_big = pair.b.chat("a/m", content="x" * 70000)
    assert too_big.status == 413, too_big
    assert pair.a_total() == before  # neither reached A


def test_the_peer_key_is_what_a_checks(pair: Pair):
    resp = pair.b.chat("wrongkey/m")
    assert resp.status == 401, resp
    assert "invalid or missing API key" in resp.json()["error"]["message"]


def test_streaming_passes_through_as_it_arrives(pair: Pair):
    # Two events, then the fake stalls without ending the stream: the client can only see
    # them if nobody on the way (B, A) holds the stream back.
    call = pair.b.chat_call("a/m", stream=True, stall_after=2)
    try:
        assert call.response().status == 200
        assert call.response().getheader("Content-Type", "").startswith("text/event-stream")
        events = call.events()
        first, second = next(events), next(events)
        assert '"chat.completion.chunk"' in first and '"chat.completion.chunk"' in second
    finally:
        call.disconnect()
    # A whole stream: one event per token, each on its own, arriving as they are made.
    call = pair.b.chat_call("a/m", stream=True, tokens=6, token_delay=0.05)
    try:
        arrivals, payloads = [], []
        for data in call.events():
            arrivals.append(time.monotonic())
            payloads.append(data)
    finally:
        call.disconnect()
    assert payloads[-1] == "[DONE]" and len(payloads) >= 7
    assert arrivals[-2] - arrivals[0] >= 0.2  # 5 gaps of 50 ms: not delivered in one piece


def test_a_stalled_peer_answers_504_and_never_blocks_local_models(pair: Pair):
    assert pair.b.chat("local").status == 200  # loaded, so the timing below is the request's
    result: dict[str, Any] = {}

    def stalled() -> None:
        began = time.monotonic()
        result["resp"] = pair.b.chat("stall/slow")
        result["took"] = time.monotonic() - began
        result["done"] = time.monotonic()

    thread = threading.Thread(target=stalled)
    thread.start()
    try:
        local = pair.b.chat("local")
        local_done = time.monotonic()
    finally:
        thread.join(30)
    assert local.status == 200
    resp = result["resp"]
    assert resp.status == 504, resp
    message = resp.json()["error"]["message"]
    assert message.startswith("peer proxy error: peer stall:")
    assert "peers.stall.timeouts.responseHeader" in message
    assert 0.9 <= result["took"] < 5
    assert local_done < result["done"]
    stalled = pair.wait_activity(lambda r: r.get("peer") == "stall")
    assert [r["resp_status_code"] for r in stalled if r.get("peer") == "stall"][0] == 504


def test_peer_requests_are_in_the_activity_log(pair: Pair):
    assert pair.b.chat("a/m", content="recorded").status == 200
    assert pair.b.chat("local").status == 200
    records = pair.wait_activity(lambda r: r.get("peer") == "a" and r["model"] == "a/m")
    peer = [r for r in records if r.get("peer") == "a" and r["model"] == "a/m"]
    assert all(r["wait_ms"] == 0 for r in peer)
    assert any(r["resp_status_code"] == 200 and r["duration_ms"] >= 0 for r in peer)
    records = pair.wait_activity(lambda r: r["model"] == "local")
    assert not any(r.get("peer") for r in records if r["model"] == "local")


def test_a_websocket_through_a_peer(pair: Pair):
    async def go() -> tuple[str, str]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                pair.b.url + "/upstream/a/m/ws", headers={"Authorization": f"Bearer {KEY_B}"}
            )
            hello = await ws.receive_json()
            await ws.send_str("via b")
            echoed = await ws.receive_str()
            await ws.close()
            return hello["hello"].split(":")[0], echoed

    assert run_async(go()) == ("a-m", "via b")  # A's upstream answered, through B then A


def test_a_peer_that_is_down_answers_502_at_once(pair: Pair):
    port = pair.a.url.rsplit(":", 1)[1]
    assert pair.a.terminate() == 0
    began = time.monotonic()
    resp = pair.b.chat("a/m")
    took = time.monotonic() - began
    assert resp.status == 502, resp
    message = resp.json()["error"]["message"]
    assert message.startswith("peer proxy error: peer a:")
    assert f"127.0.0.1:{port}" in message and "connection refused" in message
    assert took < 1.0
    assert pair.b.chat("local").status == 200


def test_a_peer_stream_in_flight_finishes_when_b_shuts_down(pair: Pair):
    raw = start_fake_upstream(name="raw", port=int(pair.raw_url.rsplit(":", 1)[1]))
    try:
        call = pair.b.chat_call("raw/fake", stream=True, tokens=12, token_delay=0.1)
        try:
            events = call.events()
            assert '"chat.completion.chunk"' in next(events)
            pair.forget_peer_pids()
            pair.b.send(signal.SIGTERM)  # ~1 s of the stream is still to come
            rest = list(events)
        finally:
            call.disconnect()
        assert rest[-1] == "[DONE]" and len(rest) >= 12
        assert pair.b.terminate(sig=None) == 0
        # The drain waited for the peer request (the router never saw it): its access line
        # comes before the drain's end, and the upstreams were stopped only after that.
        log = pair.b.log()
        assert log.index("every request in flight has finished") > log.index("raw/fake 200")
    finally:
        raw.stop()
