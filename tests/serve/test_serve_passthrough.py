"""llama-swap HEAD's passthrough rules and smaller endpoints, end to end on one server:
`upstream.ignorePaths` (409 instead of a load), `/comfyui` (the fixed comfyui_auto model),
`/props` and `/models`, `/api/version`, and cancelling in-flight requests
(`GET /api/inflight`, `POST /api/inflight/{id}/cancel`)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from serve_support import Call, Serve, ServeFactory, envelope, model, upstream_cmd
from support.upstream import http

from llamaswap.buildinfo import version_line
from llamaswap.compiler.plan import CompileOptions, compile_text
from llamaswap.runtime.passthrough import ignored_path

pytestmark = pytest.mark.e2e

CONFIG = {
    "healthCheckTimeout": 30,
    "upstream": {"ignorePaths": ["^/static/", r"\.css$"]},
    "models": {
        "a": model(upstream_cmd("a", token_delay=0.05)),
        "b": model(upstream_cmd("b")),
        "comfyui_auto": model(upstream_cmd("comfy")),
    },
    "matrix": {"sets": {"all": "a & b & comfyui_auto & slow"}},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    factory = ServeFactory(tmp_path_factory.mktemp("passthrough"))
    config = json.loads(json.dumps(CONFIG))
    # `slow` never gets past starting (its gate stays shut): its requests wait (a streamed
    # chat request with the loading-state stream).
    config["models"]["slow"] = model(factory.gate("never").wrap(upstream_cmd("slow")), sendLoadingState=True)
    server = factory(config)
    try:
        yield server
    finally:
        factory.finish()


def upstream_debug(server: Serve, model_id: str) -> dict:
    return http("GET", server.upstream_url(model_id) + "/debug/inflight").json()


def inflight(server: Serve) -> list[dict]:
    resp = server.get("/api/inflight")
    assert resp.status == 200, resp
    return resp.json()["requests"]


def one_inflight(server: Serve, model_id: str, state: str) -> dict:
    def find():
        found = [r for r in inflight(server) if r["model"] == model_id and r["state"] == state]
        return found[0] if len(found) == 1 else None

    return server.wait(find, f"one {state} request for {model_id} in /api/inflight")


def test_the_features_compile_without_not_implemented_warnings():
    a = {"cmd": "x --port ${PORT}", "compat": {"ignoreWebsockets": True}}
    text = json.dumps({"upstream": CONFIG["upstream"], "models": {"a": a}})
    plan = compile_text(text, "c.yaml", CompileOptions(env={}))
    assert plan.ok and not plan.diagnostics, [d.message for d in plan.diagnostics]


def test_default_ignore_paths_are_llama_swaps_static_asset_suffixes():
    plan = compile_text("models:\n  m:\n    cmd: x --port ${PORT}\n", "c.yaml", CompileOptions(env={}))
    for path in ("/foo.js", "/bar/baz.json", "/static/img.png", "/notes.txt", "/favicon.ico"):
        assert ignored_path(plan, path), path
    for path in ("/v1/chat/completions", "/v1/models", "/health", "/a.js/x", "/x.js\n"):
        assert not ignored_path(plan, path), path  # RE2's $ is the end of the text only


def test_ignored_paths_answer_409_until_the_model_is_ready(server):
    assert server.state("b") == "stopped"  # nothing loads b before this test
    for path in ("/upstream/b/static/app.js", "/upstream/b/site.css?v=1"):
        resp = server.get(path)
        assert resp.status == 409, (path, resp)
        assert resp.json() == envelope(
            "model b is not loaded; path matches upstream.ignorePaths", "invalid_request_error", "conflict"
        )
    assert server.state("b") == "stopped" and server.scheduler()["models"]["b"]["reserved"] == 0
    assert server.get("/upstream/b/other.js").status == 200  # not an ignored path: loads b
    resp = server.get("/upstream/b/static/app.js")
    assert resp.status == 200 and resp.json()["path"] == "/static/app.js"


def test_comfyui_is_the_fixed_comfyui_auto_model(server):
    for method, status in (("GET", 301), ("POST", 308)):
        call = Call(server.url, method, "/comfyui?x=1")
        resp = call.response()
        resp.read()
        call.disconnect()
        assert (resp.status, resp.getheader("Location")) == (status, "/comfyui/?x=1")
    assert server.state("comfyui_auto") == "stopped"  # nothing loads it before this test
    resp = server.get("/comfyui/api/queue")
    assert resp.status == 409
    assert resp.json()["error"]["message"] == "model comfyui_auto is not loaded; only /comfyui/ can start it"
    assert server.state("comfyui_auto") == "stopped"
    root = server.get("/comfyui/?q=2")
    assert root.status == 200 and root.json()["name"] == "comfy"
    last = http("GET", server.upstream_url("comfyui_auto") + "/debug/last-request").json()
    assert last["raw_path"] == "/?q=2"
    later = server.get("/comfyui/api/queue")
    assert later.status == 200 and later.json()["path"] == "/api/queue"


def test_props_and_models_route_as_llama_swap(server):
    resp = server.get("/props?model=b")
    assert resp.status == 200, resp
    body = resp.json()
    assert (body["name"], body["model"], body["total_slots"]) == ("b", "b", 1)
    assert server.get("/models").json() == server.get("/v1/models").json()


def test_api_version_is_what_serve_version_prints(server):
    resp = server.get("/api/version")
    assert resp.status == 200
    info = resp.json()
    assert set(info) == {"version", "commit", "build_date"}
    # `serve -version` prints version_line() (its format: tests/dropin/test_dropin_cli.py).
    assert version_line() == f"version: {info['version']} ({info['commit']}), built at {info['build_date']}"


def test_cancel_a_waiting_request(server):
    # As llama-swap: a request cancelled while it waits for its model gets an empty 200 (its
    # handler returns without writing anything).
    call = server.call("GET", "/upstream/slow/v1/models")
    entry = one_inflight(server, "slow", "waiting")
    assert entry["req_path"] == "/upstream/slow/v1/models" and entry["id"].isdigit()
    assert server.post(f"/api/inflight/{entry['id']}/cancel").json() == {"msg": "ok"}
    resp = call.response()
    body = resp.read()
    call.disconnect()
    assert (resp.status, body, resp.getheader("Content-Length")) == (200, b"", "0")
    server.wait(
        lambda: server.scheduler()["models"]["slow"]["reserved"] == 0 and not inflight(server),
        "the scheduler to release the cancelled request",
    )
    assert f"request {entry['id']} was cancelled" in server.log()
    missing = server.post(f"/api/inflight/{entry['id']}/cancel")
    assert missing.status == 404 and missing.json()["error"]["message"] == "inflight request not found"


def test_cancel_a_request_waiting_with_the_loading_stream(server):
    # The loading-state stream is under way: it ends cleanly, with nothing more written (no
    # error event, no [DONE]), as llama-swap's does.
    call = server.chat_call("slow", stream=True)
    resp = call.response()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    first = resp.readline()
    assert first.startswith(b"data:") and b"reasoning_content" in first, first
    entry = one_inflight(server, "slow", "waiting")
    server.post(f"/api/inflight/{entry['id']}/cancel")
    rest = resp.read()  # returns once the stream has ended cleanly (a chunked end)
    call.disconnect()
    assert b'"error"' not in rest and b"[DONE]" not in rest
    server.wait(
        lambda: server.scheduler()["models"]["slow"]["reserved"] == 0 and not inflight(server),
        "the scheduler to release the cancelled request",
    )


def test_cancel_a_streaming_request_closes_the_upstream(server):
    assert server.chat("a", tokens=1).status == 200
    before = upstream_debug(server, "a")
    call = server.chat_call("a", stream=True, tokens=400)
    events = call.events()
    first = next(events)
    assert json.loads(first)["object"] == "chat.completion.chunk"
    entry = one_inflight(server, "a", "serving")
    assert server.post(f"/api/inflight/{entry['id']}/cancel").status == 200
    rest = list(events)  # the stream ends (cleanly) after an error event
    call.disconnect()
    assert rest and json.loads(rest[-1])["error"]["message"].startswith(
        f"request {entry['id']} was cancelled"
    )
    assert "[DONE]" not in rest
    server.wait(
        lambda: (
            upstream_debug(server, "a")
            == {**before, "total": before["total"] + 1, "cancelled": before["cancelled"] + 1}
        ),
        "the upstream to see its connection closed",
    )
    server.wait(lambda: server.scheduler()["models"]["a"]["in_flight"] == 0, "a's in-flight count to drop")
    assert server.chat("a", tokens=1).status == 200  # and a serves on


def test_cancel_before_the_upstream_answers(server):
    call = server.call("POST", "/upstream/a/v1/chat/completions", {"model": "a", "messages": [], "delay": 30})
    server.wait(lambda: upstream_debug(server, "a")["inflight"] == 1, "the upstream to hold the request")
    entry = one_inflight(server, "a", "serving")
    server.post(f"/api/inflight/{entry['id']}/cancel")
    resp = call.response()
    resp.read()
    call.disconnect()
    assert resp.status == 502
    server.wait(lambda: upstream_debug(server, "a")["inflight"] == 0, "the upstream request to be closed")
