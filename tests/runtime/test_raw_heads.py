"""The proxy's byte-level head filters (`proxy.upstream_head`, `proxy.relay_head`, used for
the fast front's requests and the lean client's answers) against the multidict ones they
replace on that path (`upstream_headers`, `downstream_headers`): the same headers, in the same
order, for any mix of end-to-end, hop-by-hop and Connection-named headers (hypothesis); an
event stream's head ends with `X-Accel-Buffering: no` in place of the upstream's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from llamaswap.runtime import proxy

NAMES = [
    "Content-Type",
    "content-length",
    "Accept",
    "X-Trace",
    "x-trace",
    "Authorization",
    "X-Api-Key",
    "Connection",
    "Keep-Alive",
    "TE",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Host",
    "Expect",
    "Date",
    "Server",
    "X-Hop",
    "X-Accel-Buffering",
    "x-accel-buffering",
]
VALUES = [
    "a",
    "keep-alive",
    "close",
    "X-Hop",
    "x-trace, keep-alive",
    "Upgrade",
    "text/event-stream",
    "Text/Event-Stream; charset=utf-8",
    "Content-Type",
    "x-accel-buffering, keep-alive",
    "5",
    "",
]

heads = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=12)


def raw(head: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode()) for n, v in head]


def lines(pairs) -> bytes:
    return b"".join(f"{n}: {v}\r\n".encode() for n, v in pairs)


@settings(max_examples=300, deadline=None)
@given(heads, st.sampled_from([frozenset(), frozenset({"authorization", "x-api-key"})]))
def test_upstream_head_filters_as_upstream_headers(head, drop):
    add = {"Authorization": "Bearer k"} if drop else None
    expected = proxy.upstream_headers(CIMultiDict(head), drop)
    if add:
        expected.extend(add)
    assert proxy.upstream_head(raw(head), drop, add) == lines(expected.items())


def relay_reference(head: list[tuple[str, str]], extra: dict[str, str] | None):
    """What `relay_head` must give, built with the multidict filter."""
    expected = proxy.downstream_headers(CIMultiDict(head))
    kept = expected.getall("Content-Type", [])
    ctype = kept[-1].encode() if kept else None
    lengths = [v for n, v in head if n.lower() == "content-length"]
    for k, v in (extra or {}).items():
        expected.popall(k, None)  # an `extra` header replaces the upstream's (and goes last)
        expected.add(k, v)
    event_stream = proxy._is_event_stream_type(ctype)
    if event_stream:
        expected.popall("X-Accel-Buffering", None)
    encoded = lines(expected.items()) + (b"X-Accel-Buffering: no\r\n" if event_stream else b"")
    return encoded, (lengths[-1].encode() if lengths else None), ctype, event_stream


@settings(max_examples=500, deadline=None)
@given(
    heads,
    st.sampled_from(
        [None, {}, {"X-Llamaswap-Swap": "model=m; evicted=; set=; waited=0.100s"}, {"x-trace": "ours"}]
    ),
)
def test_relay_head_filters_as_downstream_headers(head, extra):
    assert proxy.relay_head(raw(head), extra) == relay_reference(head, extra)


def test_a_header_value_that_cannot_be_one_is_refused():
    assert proxy.relay_head([(b"X-A", b"1")], {"X-Bad": "a\r\nInjected: 1"}) is None
