"""Lints: warnings for configs that load but probably do not do what was meant."""

from __future__ import annotations

from compiler_support import at, codes, compile_yaml, locate, matrix, models_yaml, one

from llamaswap.compiler.diagnostics import Severity

MODELS = ("a", "b", "c", "d")


def warnings(plan, code):
    return [d for d in plan.diagnostics if d.code == code]


def test_clean_matrix_has_no_lints():
    plan = matrix({"s": "(a | b) & c", "t": "d"}, models=MODELS)
    assert plan.diagnostics == ()


def test_model_in_no_set_runs_alone():
    text = models_yaml(*MODELS) + "matrix:\n  sets:\n    s: a & b\n    t: c\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS401")
    assert d.severity is Severity.WARNING
    assert d.message.startswith("model 'd' is in no set: it can only run alone")
    assert at(d) == locate(text, '"d":', dedent=False)
    assert d.path == "models.d"


def test_model_in_no_set_is_not_reported_for_the_group_engine_or_when_a_set_is_broken():
    assert "LS401" not in codes(compile_yaml(models_yaml(*MODELS), dedent=False))
    assert "LS401" not in codes(matrix({"s": "a & nope"}, models=MODELS))


def test_redundant_set():
    plan = matrix({"big": "(a | b) & c", "small": "a & c | b", "d": "d"}, models=MODELS)
    d = one(plan, "LS402")
    assert d.message == "set 'small' is redundant: every combination it allows is contained in another set's"
    assert d.path == "matrix.sets.small"


def test_of_two_equivalent_sets_only_the_later_is_redundant():
    plan = matrix({"s": "a & b", "t": "a & b | a", "d": "c | d"}, models=MODELS)
    assert [d.path for d in warnings(plan, "LS402")] == ["matrix.sets.t"]


def test_referenced_sets_are_building_blocks_not_redundant():
    plan = matrix({"llms": "a | b", "s": "+llms & c", "d": "d"}, models=MODELS)
    assert warnings(plan, "LS402") == []


def test_redundancy_is_not_judged_against_symbolic_sets():
    plan = matrix({"big": "(a | b) & (c | d)", "small": "a"}, models=MODELS, budget=1)
    assert warnings(plan, "LS402") == []


def test_unused_var():
    text = models_yaml(*MODELS) + "matrix:\n  vars:\n    x: a\n    y: b\n  sets:\n    s: x & c & d | b\n"
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS403")
    assert d.message == "var 'y' is never used"
    assert at(d) == locate(text, "y: b", dedent=False)


def test_var_used_only_in_evict_costs_counts_as_used():
    plan = matrix({"s": "a & b & c & d"}, models=MODELS, vars={"x": "a"}, costs={"x": 5})
    assert warnings(plan, "LS403") == []


def test_evict_cost_on_a_model_that_never_shares_a_set():
    text = models_yaml(*MODELS) + (
        "matrix:\n  vars: {L: d}\n  evict_costs:\n    L: 30\n    a: 2\n"
        "  sets:\n    s: (a | b) & c\n    full: L\n"
    )
    plan = compile_yaml(text, dedent=False)
    d = one(plan, "LS404")
    assert d.message.startswith("evict cost for 'd' never matters")
    assert at(d) == locate(text, "L: 30", dedent=False)
    assert d.path == "matrix.evict_costs.L"


def test_evict_cost_lint_sees_into_symbolic_sets():
    plan = matrix({"s": "(a | b) & (c | d)"}, models=MODELS, costs={"a": 3}, budget=1)
    assert warnings(plan, "LS404") == []
    plan = matrix({"s": "(a | b) & (c | c)", "t": "d"}, models=MODELS, costs={"d": 3}, budget=0)
    assert [w.path for w in warnings(plan, "LS404")] == ["matrix.evict_costs.d"]


def test_duplicate_sets_report_the_later_one():
    plan = matrix({"s": "a & b", "t": "b & a", "u": "(c | d)", "v": "d | c"}, models=MODELS)
    found = [(d.path, d.message) for d in warnings(plan, "LS405")]
    assert found == [
        ("matrix.sets.t", "set 't' has exactly the same combinations as set 's'"),
        ("matrix.sets.v", "set 'v' has exactly the same combinations as set 'u'"),
    ]


def test_duplicate_in_definition_order_even_when_solver_order_differs():
    plan = matrix({"first": "+second", "second": "a & b", "other": "c | d"}, models=MODELS)
    assert [d.path for d in warnings(plan, "LS405")] == ["matrix.sets.second"]


def test_lints_are_warnings_and_do_not_fail_the_plan():
    plan = matrix({"s": "a & b", "t": "b & a"}, models=MODELS, vars={"zz": "a"}, costs={"d": 2})
    assert plan.ok
    assert {d.severity for d in plan.diagnostics} == {Severity.WARNING}
    assert sorted(set(codes(plan))) == ["LS401", "LS403", "LS404", "LS405"]


def test_redundancy_lint_stays_fast_on_large_tables():
    import time

    models = tuple(f"m{i}" for i in range(60))
    groups = ["(" + " | ".join(models[g * 10 : (g + 1) * 10]) + ")" for g in range(6)]
    sets = {f"s{i}": " & ".join(groups[i : i + 4]) for i in range(3)}  # 10^4 combinations each
    start = time.perf_counter()
    plan = matrix(sets, models=models)
    assert time.perf_counter() - start < 10
    assert plan.ok
