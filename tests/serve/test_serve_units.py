"""Pure pieces of the serve runtime: body filters, the error envelope, header filtering, the
swap header, settings read off a plan, the listen address, the demo config."""

from __future__ import annotations

import copy
import json

import click
import pytest
from multidict import CIMultiDict

from llamaswap.cli import parse_listen
from llamaswap.compiler.config import Filters, ModelConfig
from llamaswap.compiler.decision import Decision
from llamaswap.compiler.plan import compile_text
from llamaswap.runtime import errors, filters, loop, proxy, settings
from llamaswap.runtime.dispatch import swap_header
from llamaswap.runtime.router import Granted, SwapRecord
from llamaswap.runtime.serve import demo_config_text


def cfg(**keys) -> ModelConfig:
    return ModelConfig(cmd="x", **keys)


# -- filters -----------------------------------------------------------------------------------

BODY = {
    "model": "asked",
    "temperature": 0.9,
    "secret": "s",
    "top_k": 40,
    "nested": {"drop": 1, "keep": {"deep": 2}},
    "messages": [{"role": "user", "content": "hi"}],
}


def test_filters_apply_in_llama_swaps_order():
    model = cfg(
        useModelName="served",
        filters=Filters(
            stripParams="secret, nested.drop, temperature, model",
            setParams={"temperature": 0.2, "options.seed": 7, "model": "never"},
            setParamsByID={"fast": {"temperature": 0.1, "mode": "fast"}},
        ),
    )
    out = filters.rewrite_body(BODY, model, "fast")
    assert out == {
        "model": "served",
        "temperature": 0.1,
        "top_k": 40,
        "mode": "fast",
        "options": {"seed": 7},
        "nested": {"keep": {"deep": 2}},
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_filters_never_touch_model_and_leave_the_body_alone():
    original = copy.deepcopy(BODY)
    model = cfg(
        filters=Filters(stripParams="model, nested.keep.deep", setParams={"model": "x", "nested.new": 1})
    )
    out = filters.rewrite_body(BODY, model, "asked")
    assert out["model"] == "asked"
    assert out["nested"] == {"drop": 1, "keep": {}, "new": 1}
    assert BODY == original  # nested objects of the caller's body are not changed either


def test_set_params_by_id_applies_to_the_requested_name_only():
    model = cfg(filters=Filters(setParamsByID={"alias-a": {"mode": "a"}}))
    assert filters.rewrite_body(BODY, model, "alias-a")["mode"] == "a"
    assert "mode" not in filters.rewrite_body(BODY, model, "asked")
    assert filters.needs_rewrite(model, "alias-a") and not filters.needs_rewrite(model, "asked")


def test_filter_paths():
    assert filters.split_path("a.b.c") == ["a", "b", "c"]
    assert filters.split_path(r"a\.b.c") == ["a.b", "c"]
    body = {"a.b": 1, "a": {"b": 2}}
    filters.delete_path(body, r"a\.b")
    assert body == {"a": {"b": 2}}
    filters.set_path(body, "a.c.d", [1])
    assert body == {"a": {"b": 2, "c": {"d": [1]}}}
    filters.delete_path(body, "missing.path")  # no error
    filters.set_path(body, "a.b.x", 1)  # a scalar in the way is replaced by an object
    assert body["a"]["b"] == {"x": 1}


def test_legacy_strip_params_spelling():
    model = cfg(filters=Filters(strip_params="secret"))
    assert "secret" not in filters.rewrite_body(BODY, model, "asked")


def test_no_filters_no_rewrite():
    assert not filters.needs_rewrite(cfg(), "asked")


def multipart(boundary: str, fields: list[tuple[str, bytes, str | None]]) -> bytes:
    out = b"preamble\r\n"
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# Every byte value, and line breaks of every kind, in a file part.
BINARY = bytes(range(256)) + b"\r\nx\ny\rz\r\n\r\n--not-the-boundary\r\n" + bytes(range(255, -1, -1))


def test_multipart_model_field_is_read_and_replaced_byte_exactly():
    ctype = 'multipart/form-data; boundary="b0undary"'
    boundary = filters.multipart_boundary(ctype)
    assert boundary == b"b0undary"
    raw = multipart(
        "b0undary", [("file", BINARY, "a.wav"), ("model", b"asked", None), ("language", b"en", None)]
    )
    assert filters.multipart_field(raw, boundary, "model") == b"asked"
    assert filters.multipart_field(raw, boundary, "file") == BINARY
    assert filters.multipart_field(raw, boundary, "missing") is None
    out = filters.replace_multipart_field(raw, boundary, "model", b"served-name")
    assert out == raw.replace(b"\r\n\r\nasked\r\n", b"\r\n\r\nserved-name\r\n")
    assert filters.multipart_field(out, boundary, "file") == BINARY


def test_multipart_boundary_needs_form_data():
    assert filters.multipart_boundary("multipart/form-data; boundary=abc") == b"abc"
    assert filters.multipart_boundary("multipart/mixed; boundary=abc") is None
    assert filters.multipart_boundary("multipart/form-data") is None
    assert filters.multipart_boundary("application/json") is None


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, type_, code",
    [
        (400, "invalid_request_error", "bad_request"),
        (401, "authentication_error", "unauthorized"),
        (404, "invalid_request_error", "not_found"),
        (409, "invalid_request_error", "conflict"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "internal_error"),
        (502, "server_error", "bad_gateway"),
        (503, "server_error", "service_unavailable"),
        (504, "server_error", "gateway_timeout"),
        (418, "invalid_request_error", "invalid_request"),
        (507, "server_error", "internal_error"),
    ],
)
def test_error_envelope(status, type_, code):
    assert errors.envelope(status, "boom") == {
        "src": "llama-swap",
        "error": {"message": "boom", "type": type_, "param": None, "code": code},
    }


def test_error_envelope_code_override_and_bytes():
    raw = errors.envelope_bytes(429, "Too many requests", "concurrency_limit")
    assert json.loads(raw) == {
        "src": "llama-swap",
        "error": {
            "message": "Too many requests",
            "type": "rate_limit_error",
            "param": None,
            "code": "concurrency_limit",
        },
    }
    assert b" " not in raw.replace(b"Too many requests", b"")  # compact


# -- headers -----------------------------------------------------------------------------------


def test_hop_by_hop_headers_are_dropped_both_ways():
    incoming = CIMultiDict(
        [
            ("Host", "llamaswap"),
            ("Content-Length", "12"),
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "x"),
            ("Authorization", "Bearer k"),
            ("Accept", "text/event-stream"),
            ("X-Trace", "a"),
            ("X-Trace", "b"),
        ]
    )
    up = proxy.upstream_headers(incoming)
    assert list(up.items()) == [
        ("Authorization", "Bearer k"),
        ("Accept", "text/event-stream"),
        ("X-Trace", "a"),
        ("X-Trace", "b"),
    ]
    outgoing = CIMultiDict(
        [
            ("Content-Type", "text/event-stream"),
            ("Content-Length", "3"),
            ("Date", "x"),
            ("Server", "up"),
            ("Connection", "close"),
            ("Transfer-Encoding", "chunked"),
            ("X-Upstream-Name", "a"),
        ]
    )
    assert list(proxy.downstream_headers(outgoing).items()) == [
        ("Content-Type", "text/event-stream"),
        ("X-Upstream-Name", "a"),
    ]
    assert proxy.is_event_stream({"Content-Type": "text/event-stream; charset=utf-8"})
    assert not proxy.is_event_stream({"Content-Type": "application/json"})


# -- the swap header ---------------------------------------------------------------------------


def test_swap_header_format():
    decision = Decision(
        target="m",
        running=("a", "b"),
        evict=("a", "b"),
        target_set=("m",),
        set="solo",
        dsl="m",
        cost=2,
        rule="r",
    )
    record = SwapRecord(1, "m", decision, 0.0, 0.0)
    assert swap_header(Granted("m", record, 1.23449)) == {
        "X-Llamaswap-Swap": "model=m; evicted=a,b; set=solo; waited=1.234s"
    }
    assert swap_header(Granted("m")) == {}


# -- settings ----------------------------------------------------------------------------------


def plan_of(text: str):
    plan = compile_text(text, "t.yaml")
    assert plan.ok, plan.diagnostics
    return plan


def test_settings_from_a_plan():
    plan = plan_of("""
healthCheckTimeout: 1
globalTTL: 30
unloadTimeout: 7
models:
  a: {cmd: "x --port ${PORT}", ttl: 5, unloadTimeout: 3, concurrencyLimit: 2}
  b: {cmd: "x --port ${PORT}"}
  c: {cmd: "x --port ${PORT}", ttl: 0}
""")
    assert [settings.effective_ttl(plan, m) for m in ("a", "b", "c")] == [5.0, 30.0, 0.0]
    assert [settings.effective_unload_timeout(plan, m) for m in ("a", "b")] == [3.0, 7.0]
    assert settings.health_check_timeout(plan) == 1.0  # honoured as written, not raised to 15
    s = settings.scheduler_settings(plan)
    assert s.limit("a") == 2 and s.limit("b") == 10
    assert s.swap_stop_timeout == 1.0
    assert settings.scheduler_settings(plan, max_wait=0).max_wait is None


def test_unload_timeout_zero_means_ten_seconds():
    plan = plan_of('unloadTimeout: 0\nmodels:\n  a: {cmd: "x --port ${PORT}"}\n')
    assert settings.effective_unload_timeout(plan, "a") == 10.0


# -- cli, loop, demo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":9000", ("0.0.0.0", 9000)),
        ("[::1]:80", ("::1", 80)),
        ("8081", ("127.0.0.1", 8081)),
    ],
)
def test_parse_listen(value, expected):
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["host:port", "127.0.0.1:65536", "127.0.0.1:-1"])
def test_parse_listen_rejects(value):
    with pytest.raises(click.BadParameter):
        parse_listen(value)


def test_uvloop_is_chosen_when_importable():
    pytest.importorskip("uvloop")
    assert loop.loop_name() == "uvloop"
    assert loop.run(lambda: _which_loop()).startswith("uvloop")


async def _which_loop() -> str:
    import asyncio

    return type(asyncio.get_running_loop()).__module__


def test_demo_config_compiles_to_three_models_two_of_which_run_together():
    plan = plan_of(demo_config_text(start_port=21000))
    assert plan.models == ("chat-large", "chat-small", "embed")
    assert plan.engine == "matrix"
    assert plan.policy.decide("embed", ("chat-small",)).evict == ()
    assert plan.policy.decide("chat-large", ("chat-small", "embed")).evict == ("chat-small", "embed")
    assert plan.aliases == {"large": "chat-large", "small": "chat-small"}
    ports = sorted(int(plan.config.models[m].proxy.rsplit(":", 1)[1]) for m in plan.models)
    assert ports == [21000, 21001, 21002]
