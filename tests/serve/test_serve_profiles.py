"""Profiles and selectors end to end: a real `llamaswap serve`, real fake upstreams.

No profile is active at startup; `PUT /api/profiles/active` activates one (loading nothing),
its pins then rewrite requested IDs (to a model, or to a selector), the change shows on
`/api/events` and in `/v1/models`, a selector's choice and its reason are in the decision
record and the `X-Llamaswap-Resolution` header, and a reload that drops the active profile
deactivates it."""

from __future__ import annotations

import json

import pytest
import yaml
from serve_support import Call, model, upstream_cmd

pytestmark = pytest.mark.e2e


def config() -> dict:
    return {
        "healthCheckTimeout": 30,
        "models": {
            "a": model(upstream_cmd("a")),
            "b": model(upstream_cmd("b"), aliases=["bee"]),
            "c": model(upstream_cmd("c")),
        },
        "groups": {"pool": {"swap": False, "members": ["a", "b"]}},
        "selectors": {
            "fast": {"strategy": "warm", "targets": ["a", "bee"]},
            "spill": {"strategy": "spillover", "targets": ["a", "bee"]},
        },
        "profiles": {
            "coding": {"description": "code with c", "pins": {"coder": "c", "chat": "fast", "off": None}},
            "other": {"description": "plain", "pins": {"chat": "a"}},
        },
    }


def served_by(resp) -> str:
    assert resp.status == 200, resp
    return resp.json()["choices"][0]["message"]["content"].split(":")[0].lstrip("[")


def next_event(call: Call, kind: str) -> dict:
    for data in _frames(call):
        if data["type"] == kind:
            return json.loads(data["data"])
    raise AssertionError(f"the event feed ended before a {kind} event")


def _frames(call: Call):
    resp = call.response()
    while True:
        line = resp.readline()
        if not line:
            return
        if line.startswith(b"data:"):
            yield json.loads(line[5:])


def put_active(server, name) -> object:
    return server.request("PUT", "/api/profiles/active", {"name": name})


def test_profiles_activate_route_list_and_reload_away(serve, tmp_path):
    server = serve(config())
    listed = server.get("/api/profiles").json()
    assert listed == {
        "active": None,
        "profiles": [
            {"id": "coding", "description": "code with c", "pins": {"chat": "fast", "coder": "c", "off": ""}},
            {"id": "other", "description": "plain", "pins": {"chat": "a"}},
        ],
    }
    assert server.get("/api/profiles/active").json() == {"active": None}
    assert server.chat("coder").status == 404  # a pin means nothing while no profile is active

    feed = server.call("GET", "/api/events")
    assert next_event(feed, "profileChanged") == {"active": None}
    resp = put_active(server, "coding")
    assert (resp.status, resp.json()) == (200, {"active": "coding"})
    assert next_event(feed, "profileChanged") == {"active": "coding"}
    feed.disconnect()
    assert server.running() == {}  # activating loads nothing (llama-swap neither)
    ids = {r["id"]: r for r in server.get("/v1/models").json()["data"]}
    assert ids["coder"]["meta"]["llamaswap"] == {"type": "profile"} and "off" not in ids

    coder = server.chat("coder")
    assert served_by(coder) == "c"
    assert coder.headers["X-Llamaswap-Resolution"] == "profile=coding; pin=coder->c; reason=pinned"
    passthrough = server.get("/upstream/coder/anything?x=1").json()  # the pin is a path prefix too
    assert (passthrough["name"], passthrough["path"], passthrough["query"]) == ("c", "/anything", {"x": "1"})
    what_if = server.get("/api/plan?model=chat").json()  # dry run: resolved as a request would be now
    assert (what_if["model"], what_if["resolution"]["reason"], what_if["evict"]) == ("a", "fallback", ["c"])
    off = server.chat("off")
    assert off.status == 404 and "disabled by the active profile 'coding'" in off.json()["error"]["message"]

    # chat -> the warm selector fast; nothing of a, b is loaded: its first target, a swap.
    assert served_by(server.chat("chat")) == "a"
    newest = server.get("/api/decisions").json()["decisions"][0]
    assert newest["model"] == "a" and newest["evicted"] == ["c"]
    assert {k: newest["resolution"][k] for k in ("requested", "profile", "selector", "target", "reason")} == {
        "requested": "chat",
        "profile": "coding",
        "selector": "fast",
        "target": "a",
        "reason": "fallback",
    }
    again = server.chat("chat")
    assert served_by(again) == "a"
    assert again.headers["X-Llamaswap-Resolution"].endswith(
        "selector=fast; strategy=warm; target=a; reason=warm-ready"
    )
    assert "X-Llamaswap-Swap" not in again.headers
    loras = server.get("/sdapi/v1/loras?model=chat").json()  # a GET's ?model= is rewritten
    assert (loras["name"], loras["query"]) == ("a", {"model": "a"})
    spill = server.chat("spill")  # a is active and idle: below the spillover of 1
    assert served_by(spill) == "a" and spill.headers["X-Llamaswap-Resolution"].endswith("reason=least-busy")

    assert put_active(server, "missing").status == 404
    assert put_active(server, 5).status == 400
    assert server.request("PUT", "/api/profiles/active", {}).status == 400
    assert server.get("/api/profiles/active").json() == {"active": "coding"}
    assert put_active(server, None).json() == {"active": None}
    assert server.chat("chat").status == 404  # no profile: 'chat' names nothing
    assert put_active(server, "coding").json() == {"active": "coding"}

    # A reload whose config has no profile 'coding' any more deactivates it.
    cfg = config()
    del cfg["profiles"]["coding"]
    path = tmp_path / "config.yaml"
    cfg["startPort"] = yaml.safe_load(path.read_text())["startPort"]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert server.post("/api/config/reload").status == 200
    assert server.get("/api/profiles/active").json() == {"active": None}
    assert server.chat("coder").status == 404
    assert 'profile "coding" is no longer in the config' in server.wait(
        lambda: "no longer in the config" in (log := server.log()) and log, "the reload's log line"
    )


def _last_body(server, model_id: str) -> str:
    from support.upstream import http

    return http("GET", server.upstream_url(model_id) + "/debug/last-request").json()["body"]


def test_form_bodies_name_the_resolved_model_upstream(serve):
    # As llama-swap (ReplaceRequestModel): after a pin or selector resolved the asked ID, the
    # `model` field of an urlencoded or multipart body names the result, as a JSON body's does.
    server = serve(config())
    assert put_active(server, "other").json() == {"active": "other"}  # chat -> a
    speech = server.post(
        "/v1/audio/speech",
        b"input=hello+there&model=chat&voice=v%261",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert speech.status == 200 and speech.headers["X-Upstream-Name"] == "a", speech
    assert _last_body(server, "a") == "input=hello+there&model=a&voice=v%261"

    boundary = "form-boundary-1"
    audio = bytes(range(200)) + b"\r\n--not-the-boundary\r\n"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nchat\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    heard = server.post(
        "/v1/audio/transcriptions",
        multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert heard.status == 200 and heard.headers["X-Upstream-Name"] == "a", heard
    expected = multipart.replace(b"\r\n\r\nchat\r\n", b"\r\n\r\na\r\n")
    assert _last_body(server, "a") == expected.decode("utf-8", "replace")

    # A selector (warm: `a` is running) resolves `fast` the same way, for both encodings.
    picked = server.post(
        "/v1/audio/speech",
        b"model=fast&input=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert picked.status == 200 and picked.headers["X-Upstream-Name"] == "a", picked
    assert "selector=fast" in picked.headers["X-Llamaswap-Resolution"]
    assert _last_body(server, "a") == "model=a&input=x"
    heard = server.post(
        "/v1/audio/transcriptions",
        multipart.replace(b"\r\n\r\nchat\r\n", b"\r\n\r\nfast\r\n"),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert heard.status == 200 and _last_body(server, "a") == expected.decode("utf-8", "replace")

    # The activity log says how each was resolved (the newest record first).
    def resolved() -> list[dict] | None:
        data = server.get("/api/metrics/activity?limit=50").json()["data"]
        return data if len(data) >= 4 else None

    records = server.wait(resolved, "the activity records")
    by_requested = {r["requested"]: r.get("resolution") for r in records}
    assert by_requested["chat"] == {"profile": "other", "selector": None, "target": "a", "reason": "pinned"}
    assert by_requested["fast"] == {
        "profile": None,
        "selector": "fast",
        "target": "a",
        "reason": "warm-ready",
    }

    # A repeated `model` field: the first one decides, and one `model` goes upstream (as
    # llama-swap's form Set does).
    other = server.post(
        "/v1/audio/speech",
        b"model=chat&input=y&model=c",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert other.status == 200 and _last_body(server, "a") == "model=a&input=y"
