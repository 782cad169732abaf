"""Trace simulation: the engine of `plan --trace`, driving the real scheduler on a virtual clock."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from support.policies import Group, GroupTestPolicy, MatrixTestPolicy

from llamaswap.runtime.scheduler import SchedulerSettings
from llamaswap.runtime.simulate import (
    TraceError,
    TraceIssue,
    TraceRequest,
    parse_trace,
    resolve_trace,
    simulate,
    trace_load_times,
)

ALONE = MatrixTestPolicy([("a", [["a"]]), ("b", [["b"]]), ("c", [["c"]])])  # mutually exclusive


def settings(models=("a", "b", "c"), **kw) -> SchedulerSettings:
    return SchedulerSettings(tuple(models), **kw)


# --- acceptance ----------------------------------------------------------------------------


def test_abcabc_arriving_together_is_served_aabbcc_with_three_swaps():
    trace = parse_trace(["a", "b", "c", "a", "b", "c"])
    out = simulate(ALONE, settings(), trace, {}, default_load_time=10)
    assert out["served_order"] == ["a", "a", "b", "b", "c", "c"]
    assert out["swaps"] == 3
    assert out["loads"] == {"a": 1, "b": 1, "c": 1}
    assert out["evictions"] == {"a": 1, "b": 1}
    # a loads 0-10 and serves 10-11; b loads 11-21, serves 21-22; c loads 22-32, serves 32-33.
    assert out["wait"] == {"mean": 21.0, "p50": 21.0, "p95": 32.0, "max": 32.0}
    assert out["makespan"] == 33.0
    assert out["requests"] == 6 and out["rejected"] == 0


def steady_traffic(until: float = 300.0, rare_at: float = 5.0) -> list[TraceRequest]:
    """a: a 1 s request every 0.5 s, so a always has one in flight; b: once, at `rare_at`."""
    trace = [TraceRequest(i * 0.5, "a", 1.0) for i in range(int(until * 2))]
    trace.append(TraceRequest(rare_at, "b", 1.0))
    return trace


def rare_request(out: dict) -> dict:
    return next(r for r in out["per_request"] if r["model"] == "b")


def test_without_max_wait_a_single_request_waits_until_the_steady_traffic_stops():
    policy = MatrixTestPolicy([("a", [["a"]]), ("b", [["b"]])])
    out = simulate(policy, settings(("a", "b")), steady_traffic(), max_wait_override=None, verbose=True)
    b = rare_request(out)
    # The last a request arrives at 299.5 and ends at 300.5; then b loads for 1 s.
    assert b["granted_at"] == 301.5
    assert b["wait"] == 296.5
    assert out["swaps"] == 2


def test_with_max_wait_the_single_requests_wait_is_bounded_as_documented():
    policy = MatrixTestPolicy([("a", [["a"]]), ("b", [["b"]])])
    max_wait, service, load = 30.0, 1.0, 1.0
    out = simulate(policy, settings(("a", "b")), steady_traffic(), max_wait_override=max_wait, verbose=True)
    b = rare_request(out)
    # Protected at 35: a's requests queue behind b, the last one admitted (34.5) ends at
    # 35.5, b loads 35.5-36.5. Bound: max_wait + the victims' remaining service + one load.
    assert b["wait"] == 31.5
    assert b["wait"] <= max_wait + service + load
    # a's traffic resumes after b's own service: b ends 37.5, a reloads 37.5-38.5.
    assert min(r["granted_at"] for r in out["per_request"] if r["model"] == "a" and r["at"] >= 35) == 38.5
    assert out["swaps"] == 3


def test_bounded_wait_counts_a_colliding_swap_already_in_progress():
    # c is loading (10 s) when b, queued behind it, reaches max_wait; c's own waiters are
    # granted when it is ready, and b starts once they finish.
    policy = MatrixTestPolicy([("a", [["a"]]), ("b", [["b"]]), ("c", [["c"]])])
    trace = [TraceRequest(0, "c", 4.0), TraceRequest(1, "b", 1.0)] + [
        TraceRequest(2 + i * 0.5, "c", 1.0) for i in range(100)
    ]
    out = simulate(policy, settings(), trace, {"c": 10}, max_wait_override=3, verbose=True)
    b = rare_request(out)
    # b is protected at 4 (c loading until 10, then serving its waiters until 14).
    assert b["granted_at"] == 15.0
    assert b["wait"] <= 3 + (10 - 4) + 4 + 1  # max_wait + c's remaining load + its service + b's load


# --- mechanics ----------------------------------------------------------------------------------


def test_ttl_unloads_at_the_exact_deadline_and_the_next_request_reloads():
    trace = [TraceRequest(0, "a"), TraceRequest(20, "a")]
    out = simulate(ALONE, settings(ttl={"a": 5}), trace, verbose=True)
    assert out["loads"] == {"a": 2}
    assert [r["granted_at"] for r in out["per_request"]] == [1.0, 21.0]
    # Arriving exactly at the TTL deadline (idle since 2, ttl 5) still finds it loaded.
    out = simulate(ALONE, settings(ttl={"a": 5}), [TraceRequest(0, "a"), TraceRequest(7, "a")])
    assert out["loads"] == {"a": 1}


def test_stop_time_is_paid_by_swaps_that_evict():
    out = simulate(ALONE, settings(), parse_trace(["a", "b"]), stop_time=2, verbose=True)
    assert [r["granted_at"] for r in out["per_request"]] == [1.0, 5.0]  # b: 2 s stop + 1 s load


def test_concurrency_limit_rejections_are_counted():
    trace = [TraceRequest(0, "a") for _ in range(12)]
    out = simulate(ALONE, settings(concurrency_limit={"a": 10}), trace, verbose=True)
    assert out["rejected"] == 2
    assert out["per_request"][-1]["rejected"] == {"status": 429, "message": "Too many requests"}
    assert out["per_request"][-1]["wait"] is None
    assert out["served_order"] == ["a"] * 10


def test_parallel_loads_under_groups():
    policy = GroupTestPolicy(["a", "b"], {"g": Group(("a", "b"), swap=False)})
    out = simulate(policy, settings(("a", "b")), parse_trace(["a", "b"]), {"a": 3, "b": 5})
    assert out["swaps"] == 2 and out["evictions"] == {}
    assert out["makespan"] == 6.0


def test_output_is_deterministic_json_with_sorted_keys():
    trace = parse_trace(["c", "a", '{"at": 1, "model": "b", "duration": 2}', "a"])
    first = simulate(ALONE, settings(), trace, {"a": 2.5}, verbose=True)
    second = simulate(ALONE, settings(), trace, {"a": 2.5}, verbose=True)
    assert json.dumps(first) == json.dumps(second)
    assert list(first["loads"]) == sorted(first["loads"])
    assert set(first["per_request"][0]) == {"model", "at", "granted_at", "finished_at", "wait"}
    assert first["per_request"][0]["model"] == "c"  # arrival order; ties keep trace order


def test_empty_trace():
    out = simulate(ALONE, settings(), [])
    assert out["requests"] == 0 and out["makespan"] == 0.0 and out["served_order"] == []
    assert out["wait"] == {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}


def test_unknown_models_are_located_errors():
    trace = parse_trace(["a", "# comment", "ghost"])
    with pytest.raises(TraceError) as caught:
        simulate(ALONE, settings(), trace)
    assert caught.value.issues == (TraceIssue(3, "unknown model 'ghost'"),)
    with pytest.raises(ValueError):
        simulate(ALONE, settings(), trace[:1], {"ghost": 1})


# --- trace parsing ----------------------------------------------------------------------------


def test_parse_trace_accepts_json_lines_bare_names_comments_and_blank_lines():
    lines = ['{"at": 2.5, "model": "b", "duration": 0}', "", "  # note", "a\n", '{"model": "c", "at": 0}']
    assert parse_trace(lines) == [
        TraceRequest(2.5, "b", 0.0, 1),
        TraceRequest(0.0, "a", 1.0, 4),
        TraceRequest(0.0, "c", 1.0, 5),
    ]


def test_parse_trace_takes_a_whole_text_and_simulate_takes_any_iterable():
    trace = parse_trace("a\nb\n")
    assert [r.model for r in trace] == ["a", "b"]
    assert simulate(ALONE, settings(), iter(trace))["requests"] == 2


def test_parse_trace_reports_every_bad_line_with_its_number():
    lines = [
        "a",
        '{"at": -1, "model": "a"}',
        '{"at": 1, "model": "a", "durtion": 2}',
        "{not json",
        "two words",
        '{"model": "a"}',
        '{"at": true, "model": "a"}',
        '["a"]',
        '{"at": 1, "model": "zz"}',
    ]
    with pytest.raises(TraceError) as caught:
        parse_trace(lines, models=["a"])
    assert [(i.line, i.message) for i in caught.value.issues] == [
        (2, '"at" must be a number of seconds >= 0'),
        (3, "unknown key 'durtion' (did you mean 'duration'?)"),
        (4, "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
        (5, "a bare model name cannot contain spaces: 'two words'"),
        (6, '"at" is missing: each request needs its arrival time in seconds'),
        (7, '"at" must be a number of seconds >= 0'),
        (8, "expected a JSON object"),
        (9, "unknown model 'zz'"),
    ]
    assert str(caught.value).splitlines()[0] == 'line 2: "at" must be a number of seconds >= 0'


def test_resolve_trace_maps_aliases_to_ids_and_lists_every_unknown_model():
    aliases = {"alpha": "a", "a": "a", "b": "b"}
    trace = parse_trace(["alpha", "b", "ghost", '{"at": 2, "model": "alpha", "duration": 3}', "nope"])
    with pytest.raises(TraceError) as exc:
        resolve_trace(trace, aliases.get)
    assert exc.value.issues == (TraceIssue(3, "unknown model 'ghost'"), TraceIssue(5, "unknown model 'nope'"))
    resolved = resolve_trace(trace[:2] + trace[3:4], aliases.get)
    assert resolved == [
        TraceRequest(0.0, "a", 1.0, 1),
        TraceRequest(0.0, "b", 1.0, 2),
        TraceRequest(2.0, "a", 3.0, 4),
    ]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(["at", "model", "duration", "load_times", "t", "x"])


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            _JSON.map(json.dumps),
            st.dictionaries(_KEYS, _JSON, max_size=4).map(json.dumps),
            st.integers(min_value=1, max_value=2000).map(lambda n: "[" * n),
        ),
        max_size=8,
    )
)
def test_any_trace_text_parses_or_lists_located_issues(lines):
    """Fuzz: whatever a trace file holds, parse_trace returns requests or raises TraceError
    whose issues name lines of the file; trace_load_times never raises."""
    try:
        requests = parse_trace(lines)
    except TraceError as exc:
        assert exc.issues
        assert all(1 <= issue.line <= len(lines) for issue in exc.issues)
    else:
        assert all(r.at >= 0 and r.duration >= 0 and r.model for r in requests)
    loads = trace_load_times(lines)
    assert all(isinstance(v, float) and v >= 0 for v in loads.values())
