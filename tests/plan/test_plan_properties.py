"""Differential property tests: precomputed table = symbolic solver = brute force.

Random configs (random DSL trees with AND/OR/leaves/`+ref`s, vars, random evict costs) are
rendered as YAML and compiled with `compile_text`; for every target and many running states
(every reachable state, random subsets of the models, states with the target running, states
holding an unconfigured model) the three paths must agree on every field of the Decision:
`policy.table.get` (when the table has the state), `policy.solve` (symbolic, no table, no memo),
`policy.decide` (table or memo) and `support.brute_force` (naive expansion, §3.4 literally).

`candidates` (with explain) are defined as: one entry per set that can hold the target — that
set's best combination (lowest cost, then earliest in expansion order) and its cost — ranked by
(cost, solver order). Only the "cheapest combination" rule has candidates; "already running"
and "runs alone" give none. The brute force computes exactly that.

The symbolic path is also forced on sets that would be expanded (expand_budget=0, and a
random budget that leaves some sets symbolic), with no table, and must give the same answers.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_configs import UNKNOWN, group_specs, matrix_specs, running_states, tie_heavy_specs
from support.brute_force import BruteMatrix, MatrixSpec, from_plan
from support.fuzz import examples

from llamaswap.compiler.plan import CompileOptions, compile_text

# Generous per-test timeouts: when a property fails, Hypothesis shrinks for a while and its
# report (the minimal failing config) is worth the wait. Passing runs take seconds.
pytestmark = pytest.mark.timeout(900)

PROPS = settings(max_examples=examples(120))
MAX_STATES = 48


def _compile(spec, **options):
    text = spec.to_yaml()
    plan = compile_text(text, "random.yaml", CompileOptions(**options))
    errors = [d for d in plan.diagnostics if d.severity.name == "ERROR"]
    assert not errors, (text, errors)
    return plan


def _states(plan, extra: list[tuple[str, ...]], rnd: random.Random) -> list[tuple[str, ...]]:
    table = plan.policy.table
    states = list(table.states) if table is not None else []
    if len(states) > MAX_STATES:
        states = rnd.sample(states, MAX_STATES)
    models = list(plan.models)
    for _ in range(8):
        states.append(tuple(sorted(rnd.sample(models, rnd.randint(0, len(models))))))
    states.append(tuple(models))  # everything running: usually outside the table
    return list(dict.fromkeys(states + extra))


def check_matrix(plan, ref: BruteMatrix, states: list[tuple[str, ...]]) -> int:
    policy = plan.policy
    table = policy.table
    checked = 0
    for state in states:
        for target in plan.models:
            want = ref.decide(target, state)
            got = policy.solve(target, state, explain=False)
            assert got == want, ("symbolic", target, state, got, want)
            assert policy.decide(target, state) == want, ("decide", target, state)
            # Any iterable, in any order, with repeats, means the same running set.
            for raw in (list(reversed(state)), tuple(reversed(state)), state + state[:1], iter(state)):
                assert policy.decide(target, raw) == want, ("decide, not normal", target, raw)
            if table is not None:
                hit = table.get(target, state)
                if hit is not None:
                    assert hit == want, ("table", target, state, hit, want)
                    checked += 1
            explained = policy.decide(target, state, explain=True)
            want_explained = ref.decide(target, state, explain=True)
            assert explained == want_explained, ("explain", target, state, explained, want_explained)
            if explained.candidates:
                first = explained.candidates[0]
                assert (first.set, first.combination, first.cost) == (
                    explained.set,
                    explained.target_set,
                    explained.cost,
                )
    return checked


@PROPS
@given(
    spec=matrix_specs(),
    extra=st.lists(running_states(["a", "b", "c", "B", "ü", "a-1"]), max_size=4),
    seed=st.integers(0, 2**32),
)
def test_matrix_paths_agree_with_brute_force(spec: MatrixSpec, extra, seed: int) -> None:
    plan = _compile(spec)
    ref = spec.reference()
    known = set(plan.models) | {UNKNOWN}
    extra = [s for s in extra if set(s) <= known]
    check_matrix(plan, ref, _states(plan, extra, random.Random(seed)))
    # The reference built from the compiled AST agrees with the one built from the spec.
    ast_ref = from_plan(plan)
    for target in plan.models:
        for state in ((), tuple(plan.models)):
            assert ast_ref.decide(target, state, explain=True) == ref.decide(target, state, explain=True)


@PROPS
@given(spec=tie_heavy_specs(), seed=st.integers(0, 2**32))
def test_tie_heavy_paths_agree_with_brute_force(spec: MatrixSpec, seed: int) -> None:
    plan = _compile(spec)
    check_matrix(plan, spec.reference(), _states(plan, [], random.Random(seed)))


@settings(max_examples=examples(60))
@given(spec=matrix_specs(), seed=st.integers(0, 2**32), budget=st.integers(0, 200))
def test_symbolic_sets_decide_like_expanded_ones(spec: MatrixSpec, seed: int, budget: int) -> None:
    expanded = _compile(spec)
    symbolic = _compile(spec, expand_budget=0)
    partly = _compile(spec, expand_budget=budget)
    assert all(s.symbolic for s in symbolic.sets)
    assert symbolic.policy.table is None
    states = _states(expanded, [], random.Random(seed))
    ref = spec.reference()
    check_matrix(symbolic, ref, states)
    check_matrix(partly, ref, states)
    for state in states:
        for target in expanded.models:
            want = expanded.policy.decide(target, state, explain=True)
            assert symbolic.policy.decide(target, state, explain=True) == want
            assert partly.policy.decide(target, state, explain=True) == want


@settings(max_examples=examples(40))
@given(spec=matrix_specs(), seed=st.integers(0, 2**32))
def test_past_the_precompute_budget_the_solver_answers(spec: MatrixSpec, seed: int) -> None:
    plan = _compile(spec, precompute_budget=0)
    assert plan.policy.table is None
    check_matrix(plan, spec.reference(), _states(_compile(spec), [], random.Random(seed)))


@PROPS
@given(
    spec=group_specs(),
    extra=st.lists(st.lists(st.sampled_from(["a", "b", "c", "B", "ü", UNKNOWN]), unique=True), max_size=6),
)
def test_group_policy_agrees_with_brute_force(spec, extra) -> None:
    plan = _compile(spec)
    assert plan.engine == "group"
    ref = spec.reference()
    policy = plan.policy
    table = policy.table
    assert table is not None  # small configs always fit
    states = list(table.states) + [tuple(sorted(s)) for s in extra if set(s) <= set(plan.models) | {UNKNOWN}]
    states.append(tuple(plan.models))
    for state in states:
        for target in plan.models:
            want = ref.decide(target, state)
            for got in (
                policy.solve(target, state, False),
                policy.decide(target, state),
                policy.decide(target, tuple(reversed(state)) + state[:1]),
                table.get(target, state) or policy.decide(target, state),
            ):
                assert got.evict == want.evict, (target, state, got, want)
                assert (got.target, got.running, got.set, got.dsl, got.target_set, got.cost) == (
                    want.target,
                    want.running,
                    want.set,
                    want.dsl,
                    want.target_set,
                    want.cost,
                )
                assert got.rule
            assert policy.decide(target, state, explain=True).candidates == ()
    # Reachable states are closed under the policy's own decisions.
    reachable = set(table.states)
    for state in table.states:
        for target in plan.models:
            d = table.get(target, state)
            assert tuple(sorted(set(state) - set(d.evict) | {target})) in reachable


@pytest.mark.parametrize("routing", [False, True])
def test_routing_block_and_legacy_matrix_give_the_same_policy(routing: bool) -> None:
    spec = MatrixSpec(
        ["t", "a", "b", "c"],
        [("pool", ("or", tuple(("leaf", m) for m in "tabc"))), ("all", ("and", (("ref", "pool"),) * 3))],
        evict_costs={"a": 2},
    )
    plan = compile_text(spec.to_yaml(routing=routing), "c.yaml")
    assert plan.ok and plan.engine == "matrix"
    check_matrix(plan, spec.reference(), list(plan.policy.table.states) + [("a", "b", "c")])
