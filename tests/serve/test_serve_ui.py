"""The web UI's server side over real HTTP: static files and redirects, the key gate around
them, the activity endpoints in llama-swap's shapes, the activity store across a restart and
on an unwritable path, and the `/api/events` feed."""

from __future__ import annotations

import http.client as httpclient
import json
import sqlite3
import time

import pytest
from serve_support import DEADLINE, model, upstream_cmd

pytestmark = pytest.mark.e2e

KEY = "ui-key"


def raw(server, method: str, path: str, headers: dict | None = None) -> httpclient.HTTPResponse:
    """One request that does not follow redirects."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = httpclient.HTTPConnection(host, int(port), timeout=DEADLINE)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def two_models(**extra) -> dict:
    return {
        "healthCheckTimeout": 30,
        "models": {
            "a": model(upstream_cmd("a", token_delay=0.01), aliases=["alpha"]),
            "b": model(upstream_cmd("b")),
        },
        "matrix": {"sets": {"one": "a | b"}},
        **extra,
    }


def test_static_files_redirects_and_the_key_gate(serve):
    server = serve(two_models(apiKeys=[KEY]))
    assert (raw(server, "GET", "/").status, raw(server, "GET", "/").getheader("Location")) == (302, "/ui/")
    up = raw(server, "GET", "/upstream")
    assert (up.status, up.getheader("Location")) == (302, "/ui/models")
    for path in ("/ui", "/ui/", "/ui/models", "/ui/live", "/ui/playground"):
        resp = server.get(path, headers={"Authorization": ""})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html"), path
        assert b'<script type="module" src="/ui/js/app.js">' in resp.body
    js = server.get("/ui/js/pages/live.js")
    assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert server.get("/ui/app.css").headers["Content-Type"].startswith("text/css")
    assert server.get("/favicon.ico").headers["Content-Type"] == "image/svg+xml"
    assert server.get("/ui/nothing-here").status == 404
    assert server.get("/ui/__init__.py").status == 404  # only the UI's own file types are served

    # Every data endpoint stays behind the key; the UI's calls get no Basic challenge.
    for path in (
        "/api/models",
        "/api/live",
        "/api/graph",
        "/api/config",
        "/api/metrics/activity",
        "/api/metrics/stats",
        "/api/events",
        "/logs",
    ):
        plain = raw(server, "GET", path)
        assert plain.status == 401 and plain.getheader("WWW-Authenticate") == 'Basic realm="llama-swap"', path
        ui = raw(server, "GET", path, {"X-Requested-With": "llamaswap-ui"})
        assert ui.status == 401 and ui.getheader("WWW-Authenticate") is None, path
    assert raw(server, "POST", "/api/models/load/a").status == 401
    ok = raw(server, "GET", "/api/models", {"Authorization": f"Bearer {KEY}"})
    assert ok.status == 200
    html_logs = raw(server, "GET", "/logs", {"Authorization": f"Bearer {KEY}", "Accept": "text/html"})
    assert (html_logs.status, html_logs.getheader("Location")) == (302, "/ui/logs")
    text_logs = raw(server, "GET", "/logs", {"Authorization": f"Bearer {KEY}"})
    assert text_logs.status == 200 and text_logs.getheader("Content-Type").startswith("text/plain")


def test_activity_records_every_request_in_llama_swaps_shape(serve):
    server = serve(two_models())
    plain = server.chat("alpha", "one two three")
    assert plain.status == 200
    streamed = server.chat("a", "four five", stream=True, tokens=6)
    assert streamed.status == 200
    assert server.chat("nope").status == 404
    page = server.get("/api/metrics/activity").json()
    assert (page["page"], page["limit"], page["total"], page["total_pages"]) == (1, 25, 3, 1)
    missing, stream_rec, plain_rec = page["data"]  # newest first
    assert [r["id"] for r in page["data"]] == [3, 2, 1]
    usage = plain.json()["usage"]
    assert (plain_rec["model"], plain_rec["requested"], plain_rec["resp_status_code"]) == ("a", "alpha", 200)
    assert plain_rec["tokens"]["input_tokens"] == usage["prompt_tokens"] == 3
    assert plain_rec["tokens"]["output_tokens"] == usage["completion_tokens"]
    assert plain_rec["tokens"]["tokens_per_second"] > 0  # from the fake's timings
    assert plain_rec["wait_ms"] > 0  # the first request waited for a to load
    assert plain_rec["resp_content_type"] == "application/json"
    assert (stream_rec["resp_content_type"], stream_rec["tokens"]["output_tokens"]) == (
        "text/event-stream",
        6,
    )
    assert stream_rec["tokens"]["input_tokens"] == 2
    assert 0 < stream_rec["tokens"]["tokens_per_second"] < 1000  # 10 ms between tokens
    assert stream_rec["duration_ms"] >= 50
    assert (missing["model"], missing["requested"], missing["resp_status_code"]) == ("(unknown)", "nope", 404)
    for r in page["data"]:
        assert set(r) >= {
            "id",
            "timestamp",
            "model",
            "req_path",
            "resp_content_type",
            "resp_status_code",
            "tokens",
            "duration_ms",
            "has_capture",
        }

    assert [r["id"] for r in server.get("/api/metrics/activity?model=a").json()["data"]] == [2, 1]
    two = server.get("/api/metrics/activity?limit=2&page=2").json()
    assert ([r["id"] for r in two["data"]], two["total_pages"]) == ([1], 2)
    asc = server.get("/api/metrics/activity?sort=id&order=asc").json()
    assert [r["id"] for r in asc["data"]] == [1, 2, 3]
    for bad in (
        "limit=0",
        "limit=1000",
        "page=0",
        "sort=bogus",
        "order=up",
        "start=yesterday",
        "min_id=3&max_id=2",
        "start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
    ):
        resp = server.get(f"/api/metrics/activity?{bad}")
        assert resp.status == 400, bad
        assert resp.json()["error"]["code"] == "bad_request"

    stats = server.get("/api/metrics/stats").json()
    assert stats["total_requests"] == 3
    assert stats["total_output_tokens"] == usage["completion_tokens"] + 6
    assert sum(stats["gen_histogram"]["bins"]) == 2
    assert stats["store"]["persistent"] is True
    assert server.get("/api/metrics/stats?model=b").json()["total_requests"] == 0


def test_activity_survives_a_restart(serve, tmp_path):
    config = two_models()
    first = serve(config)
    assert first.chat("a").status == 200
    assert first.terminate() == 0
    db = tmp_path / "data" / "llamaswap" / "activity.sqlite3"
    assert sqlite3.connect(db).execute("SELECT COUNT(*), MAX(id) FROM activity").fetchone() == (1, 1)
    second = serve(config)
    assert second.chat("b").status == 200
    data = second.get("/api/metrics/activity").json()["data"]
    assert [(r["id"], r["model"]) for r in data] == [(2, "b"), (1, "a")]


def test_an_unwritable_store_degrades_to_memory_with_one_warning(serve, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    server = serve(two_models(store={"path": str(blocker / "activity.sqlite3")}, metricsMaxInMemory=2))
    for _ in range(3):
        assert server.chat("a").status == 200
    data = server.get("/api/metrics/activity").json()["data"]
    assert [r["id"] for r in data] == [3, 2]  # metricsMaxInMemory bounds the window
    store = server.get("/api/metrics/stats").json()["store"]
    assert store["persistent"] is False and "cannot open" in store["degraded"]
    assert server.log().count("activity store:") == 1


def read_events(call, until, timeout: float = DEADLINE) -> list[tuple[str, object]]:
    """(type, data) of the feed's events until `until(events)` holds."""
    resp = call.response()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events: list[tuple[str, object]] = []
    deadline = time.monotonic() + timeout
    while not until(events):
        assert time.monotonic() < deadline, [k for k, _ in events]
        line = resp.readline()
        assert line, "the event stream ended"
        if line.startswith(b"data:"):
            envelope = json.loads(line[5:])
            events.append((envelope["type"], json.loads(envelope["data"])))
    return events


def test_the_event_feed(serve):
    server = serve(two_models())
    call = server.call("GET", "/api/events")
    initial = read_events(
        call, lambda ev: {"logData", "modelStatus", "uiConfig", "inflight", "queue"} <= {k for k, _ in ev}
    )
    kinds = dict(initial)
    assert kinds["inflight"] == {"operation": "snapshot", "requests": []}
    assert [(m["id"], m["state"], m["aliases"]) for m in kinds["modelStatus"]] == [
        ("a", "stopped", ["alpha"]),
        ("b", "stopped", []),
    ]
    assert kinds["queue"]["queue"] == [] and kinds["queue"]["swaps"] == []

    assert server.chat("alpha").status == 200

    def done(ev):
        return any(k == "activity" for k, _ in ev) and any(
            k == "decision" and d["status"] == "ok" for k, d in ev
        )

    later = read_events(call, done)
    by_kind: dict[str, list] = {}
    for k, d in later:
        by_kind.setdefault(k, []).append(d)
    decisions = by_kind["decision"]
    assert decisions[0]["status"] == "loading" and decisions[0]["requested"] == "alpha"
    assert decisions[-1]["status"] == "ok" and "Start alpha (alias of a)" in decisions[-1]["explanation"]
    ops = [d["operation"] for d in by_kind["inflight"]]
    assert ops[0] == "upsert" and ops[-1] == "remove"
    assert by_kind["inflight"][0]["request"]["model"] == "a"
    assert {d["request"]["state"] for d in by_kind["inflight"] if d["operation"] == "upsert"} == {
        "waiting",
        "serving",
    }
    assert any(m["state"] == "ready" for d in by_kind["modelStatus"] for m in d if m["id"] == "a")
    assert any(q["swaps"] and q["swaps"][0]["model"] == "a" for q in by_kind["queue"])
    record = by_kind["activity"][0]
    assert record["id"] == 1 and record["record"]["model"] == "a" and record["record"]["requested"] == "alpha"
    assert any(d["source"] == "upstream" for d in by_kind.get("logData", []))
    call.disconnect()


@pytest.mark.parametrize("path", ["/api/graph", "/api/config", "/api/live", "/api/models"])
def test_ui_json_endpoints(serve, path):
    server = serve(two_models())
    body = server.get(path).json()
    if path == "/api/graph":
        assert body["engine"] == "matrix"
        assert [n["model"] for n in body["nodes"]] == ["a", "b"]
        assert body["edges"] == []  # a | b: never together
    elif path == "/api/config":
        assert body["engine"] == "matrix" and [m["id"] for m in body["models"]] == ["a", "b"]
        assert body["diagnostics"] == [] and body["last_reload"] is None and body["store"]["persistent"]
    elif path == "/api/live":
        assert set(body) == {"time", "models", "queue", "swaps"}
        assert body["models"]["a"] == {"state": "stopped", "in_flight": 0, "waiting": 0}
    else:
        assert [m["id"] for m in body["models"]] == ["a", "b"]
        load = server.post("/api/models/load/alpha")
        assert load.status == 200 and load.json()["model"] == "a"
        status = {m["id"]: m for m in server.get("/api/models").json()["models"]}
        assert status["a"]["state"] == "ready" and status["a"]["pid"] > 0
        assert status["a"]["last_decision"]["status"] == "ok"
        assert server.post("/api/models/load/nope").status == 404


def test_peer_models_are_listed_for_the_ui_without_a_process(serve):
    # llama-swap's UI lists a peer's models with their peerID; nothing can be loaded here.
    server = serve(two_models(peers={"box": {"proxy": "http://127.0.0.1:9", "models": ["big", "small"]}}))
    status = server.get("/api/models").json()["models"]
    assert [m["id"] for m in status] == ["a", "b", "box/big", "box/small"]
    peer = status[2]
    assert (peer["peerID"], peer["state"], peer["name"], peer["pid"]) == ("box", "peer", "big", None)
    assert {m["peerID"] for m in status[:2]} == {""}
