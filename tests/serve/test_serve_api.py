"""The HTTP API of `llamaswap serve` (reference §6), end to end on one shared server:
auth, model lists, every model-dispatched route, where the model name comes from, filters,
hop-by-hop headers, the error envelope, /upstream passthrough, /running, logs."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import uuid

import pytest
from serve_support import API_KEY, Call, envelope
from support.upstream import http

pytestmark = pytest.mark.e2e


def last_upstream_request(server, model_id: str) -> dict:
    resp = http("GET", server.upstream_url(model_id) + "/debug/last-request")
    assert resp.status == 200, resp
    return resp.json()


def test_health_is_open_and_everything_else_needs_a_key(api_server):
    url = api_server.url
    assert (http("GET", url + "/health").status, http("GET", url + "/health").body) == (200, b"OK")
    for method, path in (
        ("GET", "/v1/models"),
        ("GET", "/running"),
        ("GET", "/logs"),
        ("GET", "/api/scheduler"),
        ("GET", "/unload"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/upstream/chat/"),
    ):
        resp = http(method, url + path, {"model": "chat"} if method == "POST" else None)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == 'Basic realm="llama-swap"'
        assert resp.json() == envelope(
            "unauthorized: invalid or missing API key", "authentication_error", "unauthorized"
        )
    basic = base64.b64encode(f"anyone:{API_KEY}".encode()).decode()
    for headers in (
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Bearer {API_KEY}"},
        {"x-api-key": API_KEY},
    ):
        assert http("GET", url + "/v1/models", headers=headers).status == 200, headers
    # CORS preflight needs no key.
    call = Call(
        url,
        "OPTIONS",
        "/v1/chat/completions",
        headers={
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    resp = call.response()
    resp.read()
    call.disconnect()
    assert resp.status == 204
    assert (resp.getheader("Access-Control-Allow-Origin"), resp.getheader("Access-Control-Max-Age")) == (
        "*",
        "86400",
    )
    assert resp.getheader("Access-Control-Allow-Headers") == "authorization, content-type"
    for headers in (
        {"Authorization": "Bearer wrong"},
        {"x-api-key": "wrong"},
        {"Authorization": "Basic " + base64.b64encode(f"{API_KEY}:x".encode()).decode()},
    ):
        assert http("GET", url + "/v1/models", headers=headers).status == 401, headers


def test_v1_models_lists_listed_models_with_their_status(api_server):
    api_server.post("/api/models/unload")
    assert api_server.chat("org").status == 200
    resp = api_server.get("/v1/models", headers={"Origin": "http://example.test"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://example.test"
    body = resp.json()
    assert body["object"] == "list"
    records = {r["id"]: r for r in body["data"]}
    assert [r["id"] for r in body["data"]] == ["chat", "org", "org/model", "reasoner"]  # sorted
    assert "hidden" not in records
    assert records["org"]["status"] == {"value": "loaded"}
    assert records["chat"]["status"] == {"value": "unloaded"}
    chat = records["chat"]
    assert (chat["object"], chat["owned_by"], chat["name"], chat["description"]) == (
        "model",
        "llama-swap",
        "Chat",
        "the chat model",
    )
    assert chat["meta"]["llamaswap"] == {
        "family": "fake",
        "size": 7,
        "type": "model",
        "aliases": ["chat-alias", "chat-fast"],
    }
    assert isinstance(chat["created"], int)
    assert api_server.get("/models").json() == body
    # Unlisted models still answer.
    assert api_server.chat("hidden").json()["choices"][0]["message"]["content"].startswith("[hidden:")


ROUTES = [
    # (path we call, path the upstream receives)
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/completions", "/v1/completions"),
    ("/v1/responses", "/v1/responses"),
    ("/v1/messages", "/v1/messages"),
    ("/v1/messages/count_tokens", "/v1/messages/count_tokens"),
    ("/v1/embeddings", "/v1/embeddings"),
    ("/v1/rerank", "/v1/rerank"),
    ("/v1/reranking", "/v1/reranking"),
    ("/rerank", "/rerank"),
    ("/reranking", "/reranking"),
    ("/infill", "/infill"),
    ("/completion", "/completion"),
    ("/v1/audio/speech", "/v1/audio/speech"),
    ("/v1/audio/voices", "/v1/audio/voices"),
    ("/v1/images/generations", "/v1/images/generations"),
    ("/sdapi/v1/txt2img", "/sdapi/v1/txt2img"),
    ("/sdapi/v1/img2img", "/sdapi/v1/img2img"),
    ("/audioapi/v1/tasks/run", "/v1/tasks/run"),
    ("/v/chat/completions", "/chat/completions"),
    ("/v/responses", "/responses"),
    ("/v/completions", "/completions"),
    ("/v/messages", "/messages"),
    ("/v/messages/count_tokens", "/messages/count_tokens"),
    ("/v/embeddings", "/embeddings"),
    ("/v/rerank", "/rerank"),
    ("/v/reranking", "/reranking"),
]


def test_model_dispatched_routes_reach_the_upstream(api_server):
    for path, upstream_path in ROUTES:
        tag = uuid.uuid4().hex
        resp = api_server.post(path, {"model": "org", "input": "x", "prompt": "x", "tag": tag})
        assert resp.status == 200, (path, resp.status, resp.body[:200])
        assert resp.headers["X-Upstream-Name"] == "org", path
        seen = last_upstream_request(api_server, "org")
        assert (seen["method"], seen["path"], seen["json"]["tag"]) == ("POST", upstream_path, tag), path


def test_the_model_comes_from_a_form_field_or_the_query(api_server):
    # multipart (audio transcription): the `model` field; useModelName rewrites it there too.
    boundary = "llamaswap-test-boundary"
    audio = bytes(range(256)) + b"\r\n\r\n--almost-a-boundary\r\n"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nchat-alias\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    resp = api_server.post(
        "/v1/audio/transcriptions",
        body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert resp.status == 200 and resp.headers["X-Upstream-Name"] == "chat"
    seen = last_upstream_request(api_server, "chat")
    assert seen["path"] == "/v1/audio/transcriptions"
    # Byte for byte the same body but for the model's value (the fake upstream records the
    # body decoded as UTF-8 with replacement, so decode what we expect the same way).
    expected = body.replace(b"\r\n\r\nchat-alias\r\n", b"\r\n\r\nupstream-chat\r\n")
    assert seen["body"] == expected.decode("utf-8", "replace")
    assert seen["headers"]["content-type"] == f"multipart/form-data; boundary={boundary}"

    # urlencoded form
    resp = api_server.post(
        "/v1/audio/speech",
        b"model=org&input=hello",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 200 and resp.headers["X-Upstream-Name"] == "org"
    assert last_upstream_request(api_server, "org")["body"] == "model=org&input=hello"

    # ?model= on GET routes
    for path in ("/v1/audio/voices", "/props", "/sdapi/v1/loras"):
        resp = api_server.get(f"{path}?model=org&x=1")
        assert resp.status == 200 and resp.headers["X-Upstream-Name"] == "org", path
        seen = last_upstream_request(api_server, "org")
        assert (seen["method"], seen["path"], seen["query"]) == ("GET", path, {"model": "org", "x": "1"})


def test_filters_rewrite_json_bodies(api_server):
    body = {
        "model": "chat-fast",
        "secret": "s",
        "nested": {"drop": 1, "keep": 2},
        "temperature": 0.9,
        "messages": [{"role": "user", "content": "hi"}],
    }
    resp = api_server.post("/v1/chat/completions", body)
    assert resp.status == 200
    seen = last_upstream_request(api_server, "chat")["json"]
    assert seen == {
        "model": "upstream-chat",
        "nested": {"keep": 2},
        "temperature": 0.5,
        "options": {"k": 3},
        "mode": "fast",
        "messages": [{"role": "user", "content": "hi"}],
    }
    # setParamsByID applies only to the name it is keyed by.
    assert api_server.chat("chat-alias").status == 200
    seen = last_upstream_request(api_server, "chat")["json"]
    assert "mode" not in seen and seen["model"] == "upstream-chat"
    # No rewrite at all for a model without filters: the bytes pass through unchanged.
    raw = b'{"model":"org",  "keep":"spacing" }'
    assert api_server.post("/v1/completions", raw).status == 200
    assert last_upstream_request(api_server, "org")["body"] == raw.decode()


def test_hop_by_hop_headers_are_not_forwarded(api_server):
    call = Call(
        api_server.url,
        "POST",
        "/v1/chat/completions",
        {"model": "org", "messages": [{"role": "user", "content": "hi"}]},
        {
            **api_server.headers,
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
            "Proxy-Connection": "keep-alive",
            "X-Keep-Me": "yes",
        },
    )
    resp = call.response()
    resp.read()
    call.disconnect()
    assert resp.status == 200
    headers = last_upstream_request(api_server, "org")["headers"]
    assert headers["x-keep-me"] == "yes"
    for name in ("x-drop-me", "keep-alive", "te", "proxy-authorization", "proxy-connection"):
        assert name not in headers, name
    assert headers.get("connection", "keep-alive").lower() != "keep-alive, x-drop-me"
    assert resp.getheader("Transfer-Encoding") in (None, "chunked")


def test_errors_use_llama_swaps_envelope(api_server):
    resp = api_server.chat("no-such-model")
    assert resp.status == 404
    assert resp.json() == envelope(
        "no local server found for requested model 'no-such-model' (GET /v1/models lists the models)",
        "invalid_request_error",
        "not_found",
    )
    resp = api_server.post("/v1/chat/completions", {"messages": []})
    assert resp.status == 400  # llama-swap says 404; a request without a model is malformed
    assert resp.json() == envelope(
        'no model id could be identified: the JSON body has no "model" field (GET /v1/models lists the names'
        " it takes)",
        "invalid_request_error",
        "bad_request",
    )
    resp = api_server.post("/v1/chat/completions", b"{not json")
    assert resp.status == 400
    assert resp.json() == envelope(
        "invalid JSON body: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "invalid_request_error",
        "bad_request",
    )
    # A client that gzips its requests is told why (llama-swap does not decompress them either).
    packed = gzip.compress(json.dumps({"model": "chat", "messages": []}).encode())
    resp = api_server.post("/v1/chat/completions", packed, headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    assert resp.json()["error"]["message"] == (
        "invalid JSON body: it is gzip-compressed; request bodies are not decompressed (as in llama-swap): "
        "send it uncompressed"
    )
    resp = api_server.post("/v1/chat/completions", {"model": "nope"}, headers={"Accept": "text/plain"})
    assert (resp.status, resp.body) == (
        404,
        b"llama-swap: no local server found for requested model 'nope' (GET /v1/models lists the models)",
    )
    # A browser (Accept: text/html, no JSON) gets a page, as from llama-swap; the message is escaped.
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    resp = api_server.get("/upstream/%3Cnope%3E/", headers=browser)
    assert resp.status == 404 and resp.headers["Content-Type"].startswith("text/html")
    page = resp.body.decode()
    assert "<h1>llama-swap</h1>" in page and "404: no model found in path /upstream/&lt;nope&gt;/" in page
    resp = api_server.post(
        "/v1/chat/completions", {"model": "nope"}, headers={"Accept": "text/html, application/json"}
    )
    assert resp.status == 404 and resp.json()["error"]["code"] == "not_found"  # JSON when it takes JSON


def test_upstream_passthrough(api_server):
    # The longest model ID that prefixes the path wins, so IDs with a `/` work.
    resp = api_server.get("/upstream/org/model/some/path?x=1")
    assert resp.status == 200
    assert resp.json() | {"pid": 0, "system_fingerprint": ""} == {
        "name": "org/model",
        "pid": 0,
        "system_fingerprint": "",
        "method": "GET",
        "path": "/some/path",
        "query": {"x": "1"},
    }
    resp = api_server.get("/upstream/org/other")
    assert resp.status == 200 and resp.json()["name"] == "org" and resp.json()["path"] == "/other"
    # Aliases work; filters do not apply on /upstream.
    body = {"model": "whatever", "secret": "kept", "messages": [{"role": "user", "content": "x"}]}
    resp = api_server.post("/upstream/chat-alias/v1/chat/completions", body)
    assert resp.status == 200 and resp.headers["X-Upstream-Name"] == "chat"
    assert last_upstream_request(api_server, "chat")["json"] == body
    # /upstream/<model> redirects to /upstream/<model>/ (301 for GET, 308 otherwise).
    for method, status in (("GET", 301), ("POST", 308)):
        call = Call(api_server.url, method, "/upstream/chat?q=1", headers=api_server.headers)
        resp = call.response()
        resp.read()
        call.disconnect()
        assert (resp.status, resp.getheader("Location")) == (status, "/upstream/chat/?q=1")
    resp = api_server.get("/upstream/nope/x")
    assert resp.status == 404 and resp.json()["src"] == "llama-swap"


def test_running_lists_loaded_models(api_server):
    assert api_server.chat("org").status == 200
    entry = api_server.get("/running").json()["running"]
    org = next(e for e in entry if e["model"] == "org")
    assert org["state"] == "ready"
    assert "fake-upstream" in org["cmd"] and org["proxy"].startswith("http://127.0.0.1:")
    assert (org["ttl"], org["name"], org["description"]) == (0, "", "")
    assert isinstance(org["ttl"], int)  # seconds, as llama-swap shows them
    assert isinstance(org["pid"], int)
    assert [e["model"] for e in entry] == sorted(e["model"] for e in entry)


def test_logs_and_log_streams(api_server):
    assert api_server.chat("org").status == 200
    text = api_server.get("/logs").body.decode()
    assert "[org] org: pid" in text  # an upstream's own output, prefixed with its model
    assert "llamaswap.swaps: swap {" in text  # llamaswap's own log: one JSON line per swap

    resp = api_server.get("/logs/stream/nope")
    assert (resp.status, resp.body) == (400, b"invalid logger. Use 'proxy', 'upstream' or a model's ID")

    # History first: the model's own lines, unprefixed.
    call = api_server.call("GET", "/logs/stream/org")
    assert call.response().status == 200
    first = [call.response().readline().decode() for _ in range(2)]
    call.disconnect()
    assert first[0].startswith("listening on http://127.0.0.1:")  # the upstream's stdout...
    assert first[1].startswith("org: pid ")  # ...and its stderr, in one log

    # Live: without history, the next line is what the upstream says when it is stopped.
    call = api_server.call("GET", "/logs/stream/org?no-history")
    resp = call.response()
    assert resp.status == 200
    unloaded = threading.Thread(target=api_server.post, args=("/api/models/unload/org",))
    unloaded.start()
    line = resp.readline().decode()
    unloaded.join()
    call.disconnect()
    assert line.strip() == "org: shutting down"


def test_scheduler_snapshot(api_server):
    snap = api_server.scheduler()
    assert snap["engine"] == "matrix" and snap["shutting_down"] is False
    assert set(snap["models"]) == {"chat", "hidden", "org", "org/model", "reasoner"}
    assert set(snap["models"]["chat"]) == {"state", "in_flight", "reserved", "waiting"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v/chat/completions"])
def test_json_body_with_non_object_json_has_no_model(api_server, path):
    resp = api_server.post(path, json.dumps([1, 2]).encode())
    assert resp.status == 400 and resp.json()["error"]["message"] == (
        "no model id could be identified: the JSON body is an array; send an object with a model field"
    )


def test_llama_swap_ui_data_endpoints_for_left_out_features_say_why(api_server):
    """llama-swap's /api/performance, /api/hardware and /api/captures/{id} (features llamaswap
    leaves out; compile warns LS400 for `performance` and `captureBuffer`). Before: a bare
    text/plain `404: Not Found`, which reads as a wrong URL or a wrong version. Now: what
    llama-swap answers when the feature is off, saying why."""
    resp = api_server.get("/api/performance")
    assert (resp.status, resp.json()) == (503, {"enabled": False})
    resp = api_server.get("/api/hardware")
    assert resp.status == 503
    assert resp.json() == envelope(
        "hardware detection unavailable: llamaswap does not detect hardware",
        "server_error",
        "service_unavailable",
    )
    resp = api_server.get("/api/captures/7")
    assert resp.status == 404
    assert resp.json() == envelope(
        "capture not found: llamaswap does not capture requests (captureBuffer has no effect)",
        "invalid_request_error",
        "not_found",
    )
    resp = api_server.get("/api/captures/x")
    assert (resp.status, resp.json()["error"]["message"]) == (400, "invalid capture ID")
    for path in ("/api/performance", "/api/hardware", "/api/captures/7"):  # behind apiKeys as in llama-swap
        assert http("GET", api_server.url + path).status == 401, path
