"""One test per rule: the matrix solver rules (behaviour reference §3.4) and the group rules
(§4, after llama-swap's internal/router/group_test.go). Each decision is checked on the
policy (table or memo), on the symbolic solver and on the brute-force reference, so a rule
test can never pass on one path only.
"""

from __future__ import annotations

import textwrap

import pytest
from support.brute_force import from_plan

from llamaswap.compiler.decision import Candidate, Decision, EvictionPolicy
from llamaswap.compiler.evict import RULE_ALONE, RULE_CHEAPEST, RULE_RUNNING
from llamaswap.compiler.plan import CompileOptions, compile_text


def models_yaml(*names: str) -> str:
    return "models:\n" + "".join(f'  "{n}":\n    cmd: "server --port ${{PORT}}"\n' for n in names)


def matrix(models: tuple[str, ...], sets: str, extra: str = "") -> str:
    return (
        models_yaml(*models)
        + "matrix:\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + "  sets:\n"
        + textwrap.indent(textwrap.dedent(sets), "    ")
    )


def decide(text: str, target: str, running: tuple[str, ...], explain: bool = False) -> Decision:
    plan = compile_text(text, "rules.yaml")
    assert plan.ok, [d.message for d in plan.diagnostics]
    policy = plan.policy
    assert isinstance(policy, EvictionPolicy)
    got = policy.decide(target, running, explain=explain)
    ref = from_plan(plan).decide(target, running, explain=explain)
    symbolic = compile_text(text, "rules.yaml", CompileOptions(expand_budget=0)).policy
    if plan.engine == "matrix":
        assert got == ref
        assert symbolic.decide(target, running, explain=explain) == got
        assert policy.solve(target, tuple(sorted(running)), explain) == got
    else:
        assert (got.evict, got.set, got.target_set, got.cost) == (
            ref.evict,
            ref.set,
            ref.target_set,
            ref.cost,
        )
    return got


# -- §3.4 matrix rules -----------------------------------------------------------------------

TIEBREAK = matrix(
    ("t", "a", "b", "c"),
    """\
    pool: "(t | a | b | c)"
    all: "+pool & +pool & +pool"
""",
)


def test_rule1_target_running_evicts_nothing_and_reports_first_set_holding_all_running() -> None:
    text = matrix(
        ("a", "b", "c"),
        """\
        solo: "a | b | c"
        pair: "a & b"
        trio: "a & b & c"
    """,
    )
    d = decide(text, "a", ("a", "b"))
    assert d == Decision("a", ("a", "b"), (), "pair", "a & b", ("a", "b"), 0, RULE_RUNNING)
    # The first set (solver order) whose combinations hold *all* running models, not the first
    # holding the target.
    assert decide(text, "a", ("a",)).set == "solo"
    assert decide(text, "c", ("a", "b", "c")).set == "trio"


def test_rule1_nothing_is_evicted_even_when_no_set_allows_the_running_models() -> None:
    text = matrix(
        ("a", "b", "c"),
        """\
        x: "a & b"
        y: "c"
    """,
    )
    d = decide(text, "c", ("a", "b", "c"), explain=True)
    assert (d.evict, d.set, d.dsl, d.target_set, d.cost, d.rule) == (
        (),
        None,
        None,
        ("a", "b", "c"),
        0,
        RULE_RUNNING,
    )
    assert d.candidates == ()


def test_rule3_target_in_no_set_runs_alone_and_evicts_everything() -> None:
    text = matrix(("a", "b", "loner"), 'x: "a & b"\n')
    d = decide(text, "loner", ("a", "b"), explain=True)
    assert d == Decision("loner", ("a", "b"), ("a", "b"), None, None, ("loner",), 0, RULE_ALONE, ())
    assert decide(text, "loner", ()).evict == ()


def test_rule4_cost_is_the_sum_of_evict_costs_of_running_models_outside_the_combination() -> None:
    # Default cost 1; costs keyed by var apply to the var's model.
    text = matrix(
        ("t", "a", "b", "c"),
        """\
        x: "t & a"
        y: "t & b & c"
    """,
        extra="""\
        vars:
          big: a
        evict_costs:
          big: 5
    """,
    )
    d = decide(text, "t", ("a", "b", "c"), explain=True)
    # x evicts b and c (1 + 1 = 2); y evicts a (5).
    assert (d.set, d.evict, d.cost) == ("x", ("b", "c"), 2)
    assert d.candidates == (Candidate("x", ("a", "t"), 2), Candidate("y", ("b", "c", "t"), 5))


def test_rule5_lowest_cost_wins_over_solver_order() -> None:
    text = matrix(
        ("t", "a", "b"),
        """\
        first: "t"
        later: "t & a & b"
    """,
    )
    d = decide(text, "t", ("a", "b"))
    assert (d.set, d.evict, d.target_set, d.cost) == ("later", (), ("a", "b", "t"), 0)


def test_rule5_ties_go_to_the_first_candidate_llama_swap_tiebreaker() -> None:
    # llama-swap's TestProgram_SolveTieBreakerLexical: t with a, b, c running evicts exactly c.
    d = decide(TIEBREAK, "t", ("a", "b", "c"))
    assert (d.evict, d.set, d.target_set, d.cost) == (("c",), "all", ("a", "b", "t"), 1)


def test_rule5_ties_follow_topological_set_order_not_definition_order() -> None:
    # `x` references the later-defined `y`, so the solver order is y, x.
    text = matrix(
        ("t", "a", "b"),
        """\
        x: "(t & a) | +y"
        y: "t & b"
    """,
    )
    d = decide(text, "t", ("a", "b"), explain=True)
    assert (d.set, d.evict, d.target_set) == ("y", ("a",), ("b", "t"))
    assert [c.set for c in d.candidates] == ["y", "x"]


def test_rule5_ties_follow_expansion_order_inside_a_set() -> None:
    text = matrix(("t", "a", "b"), 's: "(b | a) & t"\n')
    d = decide(text, "t", ("a", "b"))
    assert (d.evict, d.target_set) == (("a",), ("b", "t"))  # [b, t] comes first, not [a, t]


def test_rule6_output_evict_in_running_order_target_set_sorted_with_non_running_members() -> None:
    text = matrix(("voxtral", "gemma", "z", "y"), 's: "voxtral & gemma"\n')
    d = decide(text, "gemma", ("z", "y"))
    assert d.running == ("y", "z")
    assert d.evict == ("y", "z")
    assert d.target_set == ("gemma", "voxtral")  # voxtral is allowed though not requested
    assert (d.set, d.dsl, d.cost) == ("s", "voxtral & gemma", 2)


def test_candidates_one_per_set_best_combination_ranked_by_cost_then_solver_order() -> None:
    text = matrix(
        ("t", "a", "b", "c"),
        """\
        wide: "t & (a | b | c)"
        same: "t & c"
        cheap: "(t & a & b) | (t & c)"
    """,
        extra="""\
        evict_costs:
          a: 3
    """,
    )
    d = decide(text, "t", ("a", "b"), explain=True)
    assert d.candidates == (
        Candidate("cheap", ("a", "b", "t"), 0),
        Candidate("wide", ("a", "t"), 1),
        Candidate("same", ("c", "t"), 4),
    )
    assert (d.set, d.target_set, d.cost) == ("cheap", ("a", "b", "t"), 0)


def test_a_running_model_that_is_not_configured_is_evicted_at_the_default_cost() -> None:
    d = decide(TIEBREAK, "t", ("a", "ghost"))
    assert (d.evict, d.cost, d.target_set) == (("ghost",), 1, ("a", "t"))


def test_unknown_target_is_a_key_error() -> None:
    policy = compile_text(TIEBREAK, "x.yaml").policy
    with pytest.raises(KeyError):
        policy.decide("ghost", ())


# -- §4 group rules --------------------------------------------------------------------------


def groups(models: tuple[str, ...], body: str) -> str:
    return models_yaml(*models) + "groups:\n" + textwrap.indent(textwrap.dedent(body), "  ")


def test_group_swap_stops_previous() -> None:
    text = groups(
        ("a", "b"),
        """\
        g:
          swap: true
          exclusive: true
          members: [a, b]
    """,
    )
    d = decide(text, "b", ("a",))
    assert (d.evict, d.set, d.dsl, d.target_set, d.cost) == (("a",), "g", None, ("b",), 1)


def test_group_non_swap_group_does_not_stop() -> None:
    text = groups(
        ("a", "b"),
        """\
        g:
          swap: false
          members: [a, b]
    """,
    )
    d = decide(text, "b", ("a",))
    assert (d.evict, d.target_set, d.cost) == ((), ("a", "b"), 0)


def test_group_cross_group_exclusive() -> None:
    text = groups(
        ("a", "b"),
        """\
        g1: {exclusive: true, members: [a]}
        g2: {exclusive: true, members: [b]}
    """,
    )
    assert decide(text, "b", ("a",)).evict == ("a",)
    assert decide(text, "a", ("b",)).evict == ("b",)


def test_group_cross_group_non_exclusive_parallel() -> None:
    text = groups(
        ("a", "b"),
        """\
        g1: {exclusive: false, members: [a]}
        g2: {exclusive: false, members: [b]}
    """,
    )
    assert decide(text, "b", ("a",)).evict == ()
    assert decide(text, "a", ("b",)).evict == ()
    assert decide(text, "a", ("b",)).target_set == ("a", "b")


def test_group_persistent_not_evicted_but_still_swaps_inside() -> None:
    text = groups(
        ("a", "a2", "b"),
        """\
        persist: {persistent: true, members: [a, a2]}
        other: {exclusive: true, members: [b]}
    """,
    )
    assert decide(text, "b", ("a",)).evict == ()
    assert decide(text, "a2", ("a", "b")).evict == ("a", "b")  # swap inside, exclusive outside


def test_group_non_exclusive_does_not_unload_exclusive() -> None:
    # llama-swap's one-way gotcha: loading a non-exclusive member never unloads other groups,
    # while the exclusive group still unloads the non-exclusive one.
    text = groups(
        ("a", "b"),
        """\
        excl: {exclusive: true, members: [a]}
        open: {exclusive: false, members: [b]}
    """,
    )
    assert decide(text, "b", ("a",)).evict == ()
    assert decide(text, "a", ("b",)).evict == ("b",)


def test_no_groups_means_one_model_at_a_time_in_the_default_group() -> None:
    text = models_yaml("a", "b", "c")
    plan = compile_text(text, "x.yaml")
    assert plan.engine == "group"
    assert [(g.name, g.swap, g.exclusive, g.persistent, g.members) for g in plan.groups] == [
        ("(default)", True, True, False, ("a", "b", "c"))
    ]
    d = decide(text, "c", ("a", "b"))
    assert (d.evict, d.set, d.target_set) == (("a", "b"), "(default)", ("c",))
    assert decide(text, "a", ("a",)).evict == ()
    assert decide(text, "a", ("a",)).rule == RULE_RUNNING


def test_unlisted_models_join_the_exclusive_default_group() -> None:
    text = groups(
        ("a", "b", "c", "p"),
        """\
        g: {swap: false, exclusive: false, members: [a, b]}
        keep: {persistent: true, members: [p]}
    """,
    )
    d = decide(text, "c", ("a", "b", "p"))
    assert (d.set, d.evict, d.target_set) == ("(default)", ("a", "b"), ("c", "p"))
    # ...and loading a member of the non-exclusive group leaves (default) alone.
    assert decide(text, "a", ("b", "c")).evict == ()


def test_group_decision_for_a_running_target_still_applies_the_rules() -> None:
    # llama-swap asks the group rules on every request (the fast path needs an empty evict),
    # so a running exclusive target still unloads a non-exclusive neighbour.
    text = groups(
        ("a", "b"),
        """\
        excl: {exclusive: true, members: [a]}
        open: {exclusive: false, members: [b]}
    """,
    )
    d = decide(text, "a", ("a", "b"))
    assert (d.evict, d.target_set) == (("b",), ("a",))
    assert decide(text, "a", ("a", "b"), explain=True).candidates == ()


def test_matrix_rules_do_not_have_the_group_asymmetry() -> None:
    text = matrix(("a", "b"), 'both: "a & b"\n')
    assert decide(text, "a", ("b",)).evict == ()
    assert decide(text, "b", ("a",)).evict == ()
    assert decide(text, "a", ("b",)).rule == RULE_CHEAPEST


def test_the_memo_is_bounded_and_answers_stay_the_same() -> None:
    import llamaswap.compiler.evict as evict

    text = matrix(
        tuple(f"m{i}" for i in range(12)), 'all: "' + " | ".join(f"m{i}" for i in range(12)) + '"\n'
    )
    policy = compile_text(text, "memo.yaml", CompileOptions(precompute_budget=0)).policy
    assert policy.table is None
    models = [f"m{i}" for i in range(12)]
    first = {}
    for mask in range(1 << 9):  # 512 states x 12 targets > MEMO_SIZE
        state = tuple(m for i, m in enumerate(models[:9]) if mask >> i & 1)
        for t in models:
            first[(t, state)] = policy.decide(t, state)
    assert len(policy._memo) <= evict.MEMO_SIZE
    for (t, state), d in list(first.items())[:200]:
        assert policy.decide(t, state) == d == policy.solve(t, state, False)
