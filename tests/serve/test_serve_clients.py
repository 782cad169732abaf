"""Real clients as users run them — the official `openai` SDK, curl, raw sockets — against a
real `llamaswap serve` over the fake upstream: what each of them relies on (an error it can
raise, a header, a framing) holds. What test_serve_openai.py covers is not repeated here."""

from __future__ import annotations

import json

import openai
import pytest
from serve_support import model, shell_cmd, upstream_cmd

pytestmark = pytest.mark.e2e


def _sdk(server, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=30.0, **options)


# -- the loading-state stream -----------------------------------------------------------------


def test_a_loading_stream_whose_model_fails_to_start_raises_in_the_sdk(serve):
    """The 200 of the loading stream is out before the start fails: the failure must come as an
    error frame (the envelope a non-streamed request gets as its body), which the SDK raises,
    then [DONE] — not only as loading text, which passed the failure off as a reply."""
    server = serve(
        {
            "sendLoadingState": True,
            "models": {"bad": model(shell_cmd("echo cannot load weights; exit 7 # ${PORT}"))},
        }
    )
    with _sdk(server) as client:
        stream = client.chat.completions.create(
            model="bad", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as err:
            for _ in stream:
                pass
    assert "upstream command exited prematurely (exit code 7)" in err.value.message
    assert err.value.body["type"] == "server_error"

    events = list(server.chat_call("bad", stream=True).events())
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["src"] == "llama-swap" and last["error"]["code"] == "internal_error"
    # The loading text still says why, for a UI that shows the reasoning box.
    reasoning = "".join(
        json.loads(e)["choices"][0]["delta"].get("reasoning_content", "") for e in events[:-2]
    )
    assert "error: unspecific error: upstream command exited prematurely" in reasoning


def test_a_loading_stream_past_the_queue_deadline_ends_with_a_503_error_frame(serve):
    gate = serve.gate()
    server = serve(
        {
            "healthCheckTimeout": 60,
            "sendLoadingState": True,
            "models": {"slow": model(gate.wrap(upstream_cmd("slow")))},
            "routing": {"scheduler": {"settings": {"fifo": {"queue_timeout": 1}}}},
        }
    )
    with _sdk(server) as client:
        stream = client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as err:
            for _ in stream:
                pass
    assert "waited 1s without being served" in err.value.message
    assert err.value.body["code"] == "service_unavailable"
    gate.open()


# -- errors a client can act on ---------------------------------------------------------------


def test_an_unknown_model_is_named_in_the_404_with_the_listed_name_it_likely_meant(serve):
    """The SDK shows the error's message: llama-swap's bare 'no local server found for
    requested model' said neither which name nor what to send instead."""
    server = serve(
        {
            "models": {
                "qwen-coder": model(upstream_cmd("qwen-coder"), aliases=["coder"]),
                "secret-model": model(upstream_cmd("secret-model"), unlisted=True),
            }
        }
    )
    with _sdk(server) as client:
        for asked, hint in [
            ("Qwen-Coder", "did you mean 'qwen-coder'?"),
            ("codr", "did you mean 'coder'?"),
            ("secret-modl", "GET /v1/models lists the models"),  # unlisted names are not offered
            ("gpt-4o", "GET /v1/models lists the models"),
        ]:
            with pytest.raises(openai.NotFoundError) as err:
                client.chat.completions.create(model=asked, messages=[{"role": "user", "content": "x"}])
            assert err.value.body == {
                "message": f"no local server found for requested model {asked!r} ({hint})",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
    long = "m" * 5000
    resp = server.chat(long)
    assert resp.status == 404
    message = resp.json()["error"]["message"]
    assert message.startswith("no local server found for requested model 'mmm") and len(message) < 300
    assert server.running() == {}


@pytest.mark.parametrize(
    ("body", "headers", "why"),
    [
        (
            {"messages": []},
            {},
            ': the JSON body has no "model" field (GET /v1/models lists the names it takes)',
        ),
        ({"model": "", "messages": []}, {}, ": the JSON body's model is empty"),
        ({"model": None}, {}, ": the JSON body's model is null, not a string"),
        ({"model": {"id": "m"}}, {}, ': the JSON body\'s model is {"id": "m"}, not a string'),
        (b'[{"model": "m"}]', {}, ": the JSON body is an array; send an object with a model field"),
        (
            b'{"model": "m"}',
            {"Content-Type": "text/plain"},
            ": a text/plain body is not read for a model; send JSON with Content-Type: application/json"
            " (or a form, or ?model=)",
        ),
    ],
    ids=["no-model", "empty", "null", "object", "array", "text-plain"],
)
def test_a_body_that_names_no_model_is_told_why(serve, body, headers, why):
    """curl users (llama-server takes requests without a model) got the bare 'no model id
    could be identified'."""
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    resp = server.post("/v1/chat/completions", body, headers=headers)
    assert resp.status == 400
    assert resp.json()["error"]["message"] == "no model id could be identified" + why
    assert server.running() == {}


def test_a_get_without_its_model_query_is_told_to_add_one(serve):
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    resp = server.get("/props")
    assert resp.status == 400
    assert resp.json()["error"]["message"] == (
        "no model id could be identified: a GET names its model in the query (?model=...)"
    )
    assert server.get("/props?model=m").status == 200


def test_an_sdk_whose_base_url_lacks_v1_is_told_to_add_it(serve):
    """openai.OpenAI(base_url="http://HOST:PORT") posts /chat/completions: it got aiohttp's
    plain-text `404: Not Found`, which the SDK shows as the whole message."""
    server = serve({"models": {"m": model(upstream_cmd("m"))}})
    with openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=30.0) as client:
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert err.value.body["message"] == (
            "no route for /chat/completions: did you mean /v1/chat/completions? "
            "(an OpenAI client's base_url ends in /v1: http://HOST:PORT/v1)"
        )
        with pytest.raises(openai.NotFoundError) as err:
            client.embeddings.create(model="m", input="x")
        assert "did you mean /v1/embeddings?" in err.value.body["message"]
    assert server.running() == {}  # nothing was started for them
    # The paths llama-swap serves without /v1 still work.
    assert server.post("/completion", {"model": "m", "prompt": "hi"}).status == 200
