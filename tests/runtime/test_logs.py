"""The log buffers and the hub: bounds, listeners, following, and how the hub joins buffers."""

from __future__ import annotations

import asyncio
import logging

from llamaswap.runtime.logs import HubHandler, LinePipe, LogBuffer, LogHub


def run(coro, timeout: float = 30.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def test_log_buffer_is_bounded_by_lines_and_bytes():
    buf = LogBuffer(max_lines=10, max_bytes=10_000)
    for i in range(100):
        buf.append(f"line {i}")
    assert buf.history() == [f"line {i}" for i in range(90, 100)]
    assert buf.lines_since(95) == [f"line {i}" for i in range(95, 100)]

    buf = LogBuffer(max_lines=1000, max_bytes=100, max_line=50)
    for i in range(100):
        buf.append(f"{i:03d}" + "x" * 26)  # 30 bytes with the newline
    assert buf.size_bytes <= 100
    assert buf.history() == [f"{i:03d}" + "x" * 26 for i in (97, 98, 99)]
    buf.append("y" * 500)
    assert buf.history()[-1] == "y" * 50 + "…"  # long lines are truncated
    assert buf.size_bytes <= 100

    buf = LogBuffer(max_lines=10, max_bytes=10)
    buf.append("z" * 40)
    assert buf.history() == ["z" * 40]  # the newest line stays even when over the bound


def test_log_listeners_follow_and_hub():
    async def scenario():
        hub = LogHub(max_lines=100)
        model = hub.model("m")
        assert hub.model("m") is model and hub.models() == ("m",)
        seen: list[str] = []
        unsubscribe = model.subscribe(seen.append)
        model.append("one")
        unsubscribe()
        model.append("two")
        assert seen == ["one"]

        follower = model.follow()
        assert [await anext(follower), await anext(follower)] == ["one", "two"]
        model.append("three")
        assert await anext(follower) == "three"
        await follower.aclose()

        hub.proxy.append("proxy line")
        assert hub.upstream.history() == ["[m] one", "[m] two", "[m] three"]
        assert hub.combined.history() == hub.upstream.history() + ["proxy line"]

    run(scenario())


def test_line_pipe_splits_whole_lines_across_chunks():
    async def scenario():
        lines: list[str] = []
        done = asyncio.Event()
        pipe = LinePipe(lines.append, done, max_line=8)
        pipe.data_received(b"one\r\ntw")
        pipe.data_received(b"o\n")
        assert lines == ["one", "two"]
        pipe.data_received(b"0123456789")  # no newline but over max_line: flushed as a line
        assert lines[-1] == "0123456789"
        pipe.data_received(b"tail \xff")
        assert not done.is_set()
        pipe.connection_lost(None)  # the unterminated rest is the last line
        assert lines[-1] == "tail \ufffd" and done.is_set()

    run(scenario())


def test_hub_handler_feeds_the_proxy_log():
    hub = LogHub(max_lines=10)
    handler = HubHandler(hub)
    log = logging.getLogger("llamaswap.test-logs")
    log.addHandler(handler)
    try:
        log.warning("hello %s", "hub")
    finally:
        log.removeHandler(handler)
    [line] = hub.proxy.history()
    assert line.endswith(" WARNING llamaswap.test-logs: hello hub")
    assert hub.combined.history() == [line]
