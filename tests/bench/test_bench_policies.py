"""The policy bench's parts: seeded traces and the proven lower bound (bench/traces.py, bench/lowerbound.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from lowerbound import chain_bound
from traces import KINDS, LAYOUTS, generate, renamed, trace_lines

from llamaswap.compiler.plan import compile_text
from llamaswap.runtime.policies import make_policy
from llamaswap.runtime.settings import scheduler_settings
from llamaswap.runtime.simulate import TraceRequest, parse_trace, simulate


@pytest.mark.parametrize("kind", KINDS)
def test_traces_are_seeded_valid_and_differ_by_seed(kind):
    a, b, c = generate(kind, 1), generate(kind, 1), generate(kind, 2)
    assert a == b and a.requests != c.requests and a.load_times != c.load_times
    assert parse_trace(trace_lines(a.requests)) == [
        TraceRequest(r.at, r.model, r.duration, i + 1) for i, r in enumerate(a.requests)
    ]
    assert {r.model for r in a.requests} <= set(a.models)
    assert compile_text(a.config(), f"{kind}.yaml").ok


def R(at, model):
    return TraceRequest(at, model, 1.0)


def test_chain_bound_small_cases():
    assert chain_bound([], 5) == 0
    assert chain_bound([R(0, "a"), R(1, "a")], 5) == 1
    assert chain_bound([R(0, "a"), R(10, "b"), R(20, "a")], 5) == 3  # windows disjoint: a, b, a
    assert chain_bound([R(0, "a"), R(3, "b"), R(6, "a")], 5) == 2  # a/b overlap: only a, ..., a or b-a chains
    assert chain_bound([R(0, "a"), R(3, "b"), R(6, "a")], 0) == 3
    assert chain_bound([R(0, "a"), R(0, "b"), R(0, "c")], 100) == 3  # every model loads once


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", ["fifo", "hold"])
def test_no_schedule_beats_the_bound(kind, policy):
    """The bound holds for every schedule within its budget, so also for the ones we run."""
    world = generate(kind, 0)
    plan = compile_text(world.config(), "w.yaml")
    out = simulate(
        plan.policy,
        scheduler_settings(plan),
        world.requests,
        world.load_times,
        scheduling=make_policy(policy),
    )
    assert out["rejected"] == 0
    assert chain_bound(world.requests, out["wait"]["max"]) <= out["swaps"]


def test_lookahead_is_fifo_without_a_choice_and_chooses_with_one():
    """One model at a time: no victim to choose, so lookahead runs exactly FIFO's schedule.
    Two slots: it keeps the slow, busy coder model loaded and saves swaps."""
    world = generate("agentic", 0)
    runs = {}
    for slots in (1, 2):
        plan = compile_text(world.config(slots), f"agentic-{slots}.yaml")
        assert plan.ok, plan.diagnostics
        for name in ("fifo", "lookahead"):
            runs[slots, name] = simulate(
                plan.policy,
                scheduler_settings(plan),
                world.requests,
                world.load_times,
                scheduling=make_policy(name),
            )
    assert runs[1, "lookahead"] == runs[1, "fifo"]
    fifo, look = runs[2, "fifo"], runs[2, "lookahead"]
    assert look["swaps"] < fifo["swaps"] and look["wait"]["p95"] <= fifo["wait"]["p95"]
    assert look["evictions"].get("coder-32b", 0) < fifo["evictions"].get("coder-32b", 0)


@pytest.mark.parametrize("kind", KINDS)
def test_renamed_world_is_the_same_traffic_under_other_names(kind):
    """Renaming is seeded and changes nothing but the names: one model at a time (no victim
    to choose), FIFO makes exactly the same swaps and waits."""
    world = generate(kind, 3)
    other = renamed(world)
    assert other == renamed(world) and sorted(other.load_times.values()) == sorted(world.load_times.values())
    assert [(r.at, r.duration) for r in other.requests] == [(r.at, r.duration) for r in world.requests]
    assert {m.split("-", 1)[1] for m in other.models} == set(world.models)
    runs = []
    for w in (world, other):
        plan = compile_text(w.config(), "w.yaml")
        assert plan.ok, plan.diagnostics
        runs.append(simulate(plan.policy, scheduler_settings(plan), w.requests, w.load_times))
    assert (runs[0]["swaps"], runs[0]["wait"]) == (runs[1]["swaps"], runs[1]["wait"])


def test_matrix_layouts_decide_as_their_sets_say():
    """Every layout compiles; with the slowest model alone nothing runs beside it, beside
    any one other it never has two companions, and listing the slowest first makes FIFO
    keep it where `any` (name order) lets it go."""
    world = generate("office", 0)
    slowest = max(world.load_times, key=world.load_times.get)
    others = [m for m in world.models if m != slowest]
    plans = {}
    for layout in LAYOUTS:
        plans[layout] = plan = compile_text(world.config(2, layout), f"office-{layout}.yaml")
        assert plan.ok, (layout, plan.diagnostics)
    alone = plans["big-alone"].policy.decide(slowest, (others[0], others[1]))
    assert set(alone.evict) == {others[0], others[1]}
    beside = plans["big-plus-one"].policy.decide(others[0], (slowest, others[1]))
    assert len(beside.evict) == 1
    # A load of one small model while the slowest and another small one run: under
    # slow-first FIFO evicts the small one, under name order it may evict the slowest.
    kept = plans["slow-first"].policy.decide(others[0], (slowest, others[1]))
    assert kept.evict == (others[1],)
    with pytest.raises(ValueError, match="unknown layout"):
        world.config(2, "nope")


def test_the_adversary_cuts_a_trace_where_lookahead_parts_from_fifo_and_makes_it_worse():
    """bench/adversary.py: the first n requests on which the two schedules differ, then one
    request for what lookahead let go: lookahead decides as on the real trace and loses."""
    from adversary import first_parting, punish

    world = generate("office", 0)
    plan = compile_text(world.config(2), "w.yaml")
    settings = scheduler_settings(plan)
    requests = sorted(world.requests, key=lambda r: r.at)
    assert first_parting(plan, settings, requests, world.load_times, "fifo") is None
    n = first_parting(plan, settings, requests, world.load_times, "lookahead")
    assert n is not None and 1 <= n < len(requests)
    fifo, mine = punish(plan, settings, requests, world.load_times, "lookahead", n)
    assert mine["swaps"] > fifo["swaps"]
    # One request fewer and the two schedules agree: n is the shortest such prefix.
    short = [
        simulate(
            plan.policy,
            settings,
            requests[: n - 1],
            world.load_times,
            scheduling=make_policy(p),
            verbose=True,
        )
        for p in ("fifo", "lookahead")
    ]
    assert short[0]["decisions"] == short[1]["decisions"]
