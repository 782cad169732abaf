"""The official `openai` Python client, unchanged, against `llamaswap serve`: chat and text
completions (streaming and not), embeddings, the model list, errors, and a streamed answer
that starts with the loading-state preamble."""

from __future__ import annotations

import openai
import pytest
from serve_support import API_KEY

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(api_server):
    with openai.OpenAI(base_url=api_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30.0) as c:
        yield c


def test_chat_completion(client):
    out = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "ping"}])
    assert out.object == "chat.completion"
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content.startswith("[chat:")
    assert out.choices[0].message.content.endswith("You said: ping")
    assert out.model == "upstream-chat"  # useModelName: the upstream saw its own name
    assert out.usage.completion_tokens > 0


def test_chat_completion_stream(client):
    stream = client.chat.completions.create(
        model="chat-alias",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[chat:") and text.endswith("You said: stream me")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_text_completion_streaming_and_not(client):
    out = client.completions.create(model="org", prompt="once upon", max_tokens=3)
    assert out.choices[0].finish_reason == "length"
    assert out.choices[0].text.startswith("[org:")
    chunks = list(client.completions.create(model="org/model", prompt="hi", stream=True))
    assert "".join(c.choices[0].text for c in chunks).startswith("[org/model:")


def test_embeddings(client):
    out = client.embeddings.create(model="org", input=["a", "b"])  # base64 on the wire
    assert [d.index for d in out.data] == [0, 1]
    assert all(len(d.embedding) == 8 and all(isinstance(x, float) for x in d.embedding) for d in out.data)
    again = client.embeddings.create(model="org", input="a", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(out.data[0].embedding, rel=1e-6)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["chat", "org", "org/model", "reasoner"]


def test_errors_raise_the_usual_exceptions(client, api_server):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert err.value.body["message"] == (
        "no local server found for requested model 'nope' (GET /v1/models lists the models)"
    )
    with openai.OpenAI(base_url=api_server.url + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_streamed_answer_after_the_loading_state_preamble(client, api_server):
    api_server.post("/api/models/unload/reasoner")
    stream = client.chat.completions.create(
        model="reasoner", messages=[{"role": "user", "content": "think"}], stream=True
    )
    chunks = list(stream)
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "loading model: reasoner" in reasoning and "Done! (" in reasoning
    assert content.startswith("[reasoner:") and content.endswith("You said: think")
