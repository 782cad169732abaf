"""`proxy.relay_head` (the one-pass client head of a relayed answer) against what the relay
built before it in two passes: `downstream_head` with `X-Accel-Buffering: no` added when the
upstream's (last) Content-Type says text/event-stream, and again without it when a Connection
header names Content-Type (so the answer is no event stream). The same lines, length,
Content-Type and event-stream verdict for any mix of headers (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llamaswap.runtime import proxy

NAMES = [
    "Content-Type",
    "content-type",
    "Content-Length",
    "X-Accel-Buffering",
    "x-accel-buffering",
    "Connection",
    "Keep-Alive",
    "Transfer-Encoding",
    "Date",
    "Server",
    "X-Trace",
    "X-Llamaswap-Swap",
]
VALUES = [
    "text/event-stream",
    "Text/Event-Stream; charset=utf-8",
    "application/json",
    "yes",
    "no",
    "keep-alive",
    "close",
    "Content-Type",
    "x-accel-buffering, keep-alive",
    "X-Trace",
    "12",
    "",
]
heads = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=10)
extras = st.sampled_from(
    [None, {}, {"X-Llamaswap-Swap": "model=m; evicted=; set=; waited=0.100s"}, {"x-trace": "ours"}]
)


def two_passes(raw, extra):
    ctype = None
    for name, value in raw:
        if name.lower() == b"content-type":
            ctype = value
    sse = proxy._is_event_stream_type(ctype)
    head = proxy.downstream_head(raw, {**(extra or {}), "X-Accel-Buffering": "no"} if sse else extra)
    if head is None:
        return None
    lines, length, kept = head
    event_stream = proxy._is_event_stream_type(kept)
    if sse and not event_stream:
        lines = (proxy.downstream_head(raw, extra) or head)[0]
    return lines, length, kept, event_stream


@settings(max_examples=500, deadline=None)
@given(heads, extras)
def test_relay_head_is_the_two_pass_head(head, extra):
    raw = [(n.encode(), v.encode()) for n, v in head]
    assert proxy.relay_head(raw, extra) == two_passes(raw, extra)


def test_an_event_stream_gets_one_x_accel_buffering_no_last():
    raw = [(b"Content-Type", b"text/event-stream"), (b"X-Accel-Buffering", b"yes"), (b"X-A", b"1")]
    got = proxy.relay_head(raw, {"X-Llamaswap-Swap": "s"})
    assert got == (
        b"Content-Type: text/event-stream\r\nX-A: 1\r\nX-Llamaswap-Swap: s\r\nX-Accel-Buffering: no\r\n",
        None,
        b"text/event-stream",
        True,
    )
    plain = proxy.relay_head([(b"Content-Type", b"application/json"), (b"X-Accel-Buffering", b"yes")])
    assert plain == (
        b"Content-Type: application/json\r\nX-Accel-Buffering: yes\r\n",
        None,
        b"application/json",
        False,
    )
    assert proxy.relay_head([(b"X-A", b"1")], {"X-Bad": "a\r\nInjected: 1"}) is None


# -- the request head's upstream lines, read by split_head in its one pass --------------------

REQUEST_NAMES = [
    "Host",
    "Content-Type",
    "Content-Length",
    "Accept",
    "Authorization",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Proxy-Authorization",
    "Proxy-Connection",
    "Expect",
    "X-Trace",
    "x-trace",
]
REQUEST_VALUES = [
    "a",
    "keep-alive",
    "close",
    "Keep-Alive , keep-alive",
    "X-Trace",
    "x-trace, keep-alive",
    "te",
    "",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(REQUEST_NAMES), st.sampled_from(REQUEST_VALUES)), max_size=10))
def test_split_heads_upstream_lines_are_upstream_head(head):
    from llamaswap.runtime.fastserver import split_head

    for _ in range(2):  # the second time from split_head's cache of lines
        wire = b"POST /v1/x HTTP/1.1\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in head) + b"\r\n"
        split = split_head(wire)
        if split is None:  # (two Content-Lengths, close with keep-alive ...): llhttp's to judge
            continue
        expected = proxy.upstream_head(split.headers)
        tokens = {t.strip().lower() for n, v in head if n.lower() == "connection" for t in v.split(",")}
        if tokens <= {"keep-alive", "close", ""}:
            assert split.upstream == expected
        else:  # a Connection header names other headers: proxy.upstream_head decides
            assert split.upstream is None


def test_the_front_and_the_proxy_agree_on_what_is_not_forwarded():
    from llamaswap.runtime.fastserver import NOT_FORWARDED

    assert NOT_FORWARDED == proxy._HOP_BY_HOP_B | proxy._NOT_UPSTREAM_B
