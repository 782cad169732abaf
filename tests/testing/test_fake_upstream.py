"""The fake upstream, as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
from support.upstream import (
    FakeUpstream,
    run_async,
    start_fake_upstream,
    wait_until,
    wait_until_async,
)

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def upstream():
    """One shared instance for the tests that only talk to it."""
    fake = start_fake_upstream(name="shared")
    yield fake
    assert fake.stop() == 0


def sse_events(body: bytes) -> list[str]:
    events = [line[len("data: ") :] for line in body.decode().split("\n\n") if line]
    assert all(e for e in events)
    return events


def stream_chunks(body: bytes) -> list[dict]:
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_names_itself_everywhere(upstream: FakeUpstream):
    fingerprint = f"shared:{upstream.pid}"
    for resp in (
        upstream.get("/"),
        upstream.get("/v1/models"),
        upstream.get("/health"),
        upstream.post(CHAT, {"model": "x", "messages": []}),
        upstream.post("/anything/else?q=1"),
    ):
        assert resp.status == 200
        assert resp.headers["X-Upstream-Name"] == "shared"
        assert resp.headers["X-Upstream-Pid"] == str(upstream.pid)
    assert upstream.get("/").json()["system_fingerprint"] == fingerprint
    assert upstream.get("/v1/models").json()["data"][0]["id"] == "shared"
    echo = upstream.post("/anything/else?q=1").json()
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/anything/else", {"q": "1"})


def test_chat_non_streaming(upstream: FakeUpstream):
    resp = upstream.post(
        CHAT, {"model": "requested-name", "messages": [{"role": "user", "content": "hi there"}]}
    )
    body = resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "requested-name"
    assert body["system_fingerprint"] == f"shared:{upstream.pid}"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == f"[shared:{upstream.pid}] You said: hi there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 5

    bounded = upstream.post(
        CHAT, {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "a b c"}]}
    ).json()
    assert bounded["usage"]["completion_tokens"] == 2
    assert bounded["choices"][0]["finish_reason"] == "length"
    assert bounded["choices"][0]["message"]["content"].startswith(f"[shared:{upstream.pid}]")


def test_chat_streaming_one_chunk_per_token(upstream: FakeUpstream):
    resp = upstream.post(
        CHAT, {"model": "m", "stream": True, "tokens": 7, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    chunks = stream_chunks(resp.body)
    content = [c["choices"][0]["delta"]["content"] for c in chunks if "content" in c["choices"][0]["delta"]]
    assert len(content) == 7
    assert content[0] == f"[shared:{upstream.pid}] "
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["model"] for c in chunks} == {"m"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}

    bounded = stream_chunks(
        upstream.post(
            CHAT, {"model": "m", "stream": True, "tokens": 50, "max_tokens": 3, "messages": []}
        ).body
    )
    assert sum("content" in c["choices"][0]["delta"] for c in bounded) == 3
    assert bounded[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_reports_llama_server_timings(upstream: FakeUpstream):
    plain = upstream.post(
        CHAT,
        {
            "model": "m",
            "tokens": 4,
            "token_delay": 0.01,
            "messages": [{"role": "user", "content": "one two three"}],
        },
    ).json()
    t = plain["timings"]
    assert (t["prompt_n"], t["predicted_n"]) == (3, 4)
    assert t["predicted_ms"] >= 30.0  # a non-streamed reply takes as long as its stream would
    assert t["predicted_per_second"] == pytest.approx(4000.0 / t["predicted_ms"], rel=1e-2)
    chunks = stream_chunks(
        upstream.post(
            CHAT,
            {
                "model": "m",
                "stream": True,
                "tokens": 5,
                "token_delay": 0.02,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ).body
    )
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["timings"]["predicted_n"] == 5 and final["timings"]["prompt_n"] == 1
    # four pauses of 20 ms between five tokens
    assert final["timings"]["predicted_ms"] >= 80.0
    assert 0 < final["timings"]["predicted_per_second"] <= 5 * 1000 / 80.0
    assert all("timings" not in c for c in chunks[:-1])


def test_streaming_paces_tokens(upstream: FakeUpstream):
    began = time.monotonic()
    resp = upstream.post(
        CHAT, {"model": "m", "stream": True, "tokens": 4, "token_delay": 0.05, "messages": []}
    )
    assert time.monotonic() - began >= 0.15  # three gaps between four tokens
    assert len(stream_chunks(resp.body)) == 5


def test_records_the_last_request(upstream: FakeUpstream):
    upstream.post(CHAT, {"model": "m", "temperature": 0.5, "messages": []}, headers={"X-Custom": "yes"})
    upstream.get("/health")  # never recorded
    last = upstream.get("/debug/last-request").json()
    assert last["method"] == "POST" and last["path"] == CHAT
    assert last["json"] == {"model": "m", "temperature": 0.5, "messages": []}
    assert last["headers"]["x-custom"] == "yes"
    assert last["headers"]["content-type"] == "application/json"
    assert json.loads(last["body"]) == last["json"]
    assert upstream.get("/debug/requests").json()["requests"][-1] == last


def test_bad_json_is_a_400(upstream: FakeUpstream):
    resp = upstream.post(CHAT, b"{nope")
    assert resp.status == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_delay_holds_a_request_in_flight_until_cancelled(upstream: FakeUpstream):
    async def scenario():
        async with aiohttp.ClientSession() as session:

            async def counters() -> dict:
                async with session.get(upstream.url + "/debug/inflight") as r:
                    return await r.json()

            before = await counters()
            assert before["inflight"] == 0

            began = time.monotonic()
            async with session.post(
                upstream.url + CHAT + "?delay=0.2", json={"model": "m", "messages": []}
            ) as r:
                assert r.status == 200
            assert time.monotonic() - began >= 0.2

            async def slow():
                async with session.post(
                    upstream.url + CHAT, json={"model": "m", "delay": 30, "messages": []}
                ) as r:
                    await r.read()

            task = asyncio.create_task(slow())
            state: dict = {}

            async def inflight_is(n: int) -> bool:
                state.update(await counters())
                return state["inflight"] == n

            deadline = time.monotonic() + 5
            while not await inflight_is(1):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            while not await inflight_is(0):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert state["cancelled"] == before["cancelled"] + 1

    run_async(scenario())


def test_openai_client_streaming_and_not(upstream: FakeUpstream):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=upstream.url + "/v1", api_key="unused", max_retries=0)
    fingerprint = f"shared:{upstream.pid}"

    chat = client.chat.completions.create(model="alias", messages=[{"role": "user", "content": "ping"}])
    assert chat.model == "alias"
    assert chat.system_fingerprint == fingerprint
    assert fingerprint in chat.choices[0].message.content

    stream = client.chat.completions.create(
        model="alias",
        messages=[{"role": "user", "content": "ping"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens

    completion = client.completions.create(model="alias", prompt="abc")
    assert fingerprint in completion.choices[0].text
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model="alias", prompt="abc", stream=True)
    )
    assert streamed == completion.choices[0].text

    # The client asks for base64 by default and decodes it: both encodings must agree.
    floats = client.embeddings.create(model="alias", input=["a", "b"])
    plain = client.embeddings.create(model="alias", input=["a", "b"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [8, 8]
    assert floats.data[0].embedding == pytest.approx(plain.data[0].embedding, abs=1e-6)
    assert floats.data[0].embedding != floats.data[1].embedding

    assert [m.id for m in client.models.list()] == ["shared"]


def test_health_turns_ok_after_the_startup_delay():
    fake = start_fake_upstream(name="slow", startup_delay=0.5)
    try:
        healthy_at = fake.get("/debug/info").json()["healthy_monotonic"]
        seen = []

        def healthy() -> bool:
            before = time.monotonic()
            status = fake.get("/health").status
            seen.append((before, time.monotonic(), status))
            return status == 200

        wait_until(healthy, timeout=10, message="/health to answer 200")
        assert any(status == 503 for _, _, status in seen)
        for before, after, status in seen:  # monotonic time is shared between processes
            assert (after >= healthy_at) if status == 200 else (before < healthy_at)
        assert fake.get("/health").json() == {"status": "ok"}
        sigterm_during_a_stream_exits_0_promptly(fake)
    finally:
        fake.stop()


def sigterm_during_a_stream_exits_0_promptly(fake: FakeUpstream) -> None:
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.post(
                fake.url + CHAT,
                json={"model": "m", "stream": True, "tokens": 1000, "token_delay": 0.05, "messages": []},
            ) as resp:
                await resp.content.readline()  # the stream has begun
                fake.proc.send_signal(signal.SIGTERM)
                await wait_until_async(
                    lambda: fake.proc.poll() is not None, timeout=5, message="the fake upstream to exit"
                )

    run_async(scenario())
    assert fake.proc.returncode == 0


def test_fail_health_never_turns_ok_and_sigint_exits_0():
    fake = start_fake_upstream(name="sick", fail_health=True)
    try:
        assert fake.get("/debug/info").json()["healthy_monotonic"] is None
        assert [fake.get("/health").status for _ in range(3)] == [503, 503, 503]
        assert fake.get("/").status == 200  # llama-swap's preload
    finally:
        fake.proc.send_signal(signal.SIGINT)
        assert fake.proc.wait(10) == 0
        fake.stop()


def test_exit_after_crashes_with_a_nonzero_code():
    fake = start_fake_upstream(name="crashy", exit_after=0.3)
    try:
        began = time.monotonic()
        assert fake.proc.wait(10) == 3
        assert time.monotonic() - began < 5
    finally:
        fake.stop()
