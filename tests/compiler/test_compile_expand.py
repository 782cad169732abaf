"""Expansion into the set table (reference §3.2), solver order, and the budget beyond
which a set stays symbolic."""

from __future__ import annotations

import time

import pytest
from compiler_support import codes, combos, matrix, one

from llamaswap.compiler.expand import COUNT_CAP, count_combinations, expand_sets
from llamaswap.compiler.resolve import resolve_matrix

MODELS = ("a", "b", "c", "d", "e", "L", "v", "g", "q", "m")


@pytest.mark.parametrize(
    "dsl, expected",
    [
        ("L", [["L"]]),
        ("a & b", [["a", "b"]]),
        ("a | b", [["a"], ["b"]]),
        ("(a | b) & c", [["a", "c"], ["b", "c"]]),
        ("(a | b) & (c | d)", [["a", "c"], ["a", "d"], ["b", "c"], ["b", "d"]]),
        ("(g | q | m) & v", [["g", "v"], ["q", "v"], ["m", "v"]]),
        ("a | b & c", [["a"], ["b", "c"]]),  # precedence
        ("a & b | c", [["a", "b"], ["c"]]),
        ("c | b | a", [["c"], ["b"], ["a"]]),  # OR keeps child order
        ("a & b & c & d", [["a", "b", "c", "d"]]),  # n-ary AND
        (
            "(a | b) & (c | d) & (e | L)",
            [  # left-major product
                ["a", "c", "e"],
                ["L", "a", "c"],
                ["a", "d", "e"],
                ["L", "a", "d"],
                ["b", "c", "e"],
                ["L", "b", "c"],
                ["b", "d", "e"],
                ["L", "b", "d"],
            ],
        ),
        ("d & c & b & a", [["a", "b", "c", "d"]]),  # each combination sorted
        ("a & a", [["a"]]),  # deduplicated inside
        ("(a | b) & (a | b)", [["a"], ["a", "b"], ["b"]]),  # ...and across the set
        ("a | a", [["a"]]),
    ],
)
def test_expansion(dsl, expected):
    plan = matrix({"s": dsl}, models=MODELS)
    assert combos(plan, "s") == expected


def test_sorting_is_by_code_point():
    plan = matrix({"s": '"b" & "B" & "a" & "_" & "é"'}, models=("b", "B", "a", "_", "é"))
    assert combos(plan, "s") == [["B", "_", "a", "b", "é"]]


def test_reference_inlines_the_family():
    plan = matrix({"llms": "a | b", "s": "+llms & v"}, models=MODELS)
    assert combos(plan, "s") == [["a", "v"], ["b", "v"]]


def test_dedup_after_resolution_two_vars_one_model():
    plan = matrix({"s": "x & y & b"}, models=MODELS, vars={"x": "a", "y": "a"})
    assert combos(plan, "s") == [["a", "b"]]
    plan = matrix({"s": "x | y"}, models=MODELS, vars={"x": "a", "y": "a"})
    assert combos(plan, "s") == [["a"]]


def test_solver_order_puts_dependencies_first():
    plan = matrix({"a": "+b & x", "b": "y"}, models=("x", "y"))
    assert [s.name for s in plan.sets] == ["b", "a"]
    assert combos(plan, "a") == [["x", "y"]]


def test_solver_order_is_depth_first_in_definition_order():
    plan = matrix(
        {"top": "+mid & a", "other": "b", "mid": "+leaf | c", "leaf": "d", "last": "+other & +leaf"},
        models=MODELS,
    )
    assert [s.name for s in plan.sets] == ["leaf", "mid", "top", "other", "last"]


def test_long_reference_chain_does_not_recurse_out():
    sets = {f"s{i}": f"+s{i + 1}" for i in range(3000)}
    sets["s3000"] = "a & b"
    plan = matrix(sets, models=MODELS)
    assert [s.name for s in plan.sets][:2] == ["s3000", "s2999"]
    assert combos(plan, "s0") == [["a", "b"]]


def ten_by_ten() -> tuple[tuple[str, ...], str]:
    models = tuple(f"m{g}x{i}" for g in range(10) for i in range(10))
    dsl = " & ".join("(" + " | ".join(f"m{g}x{i}" for i in range(10)) + ")" for g in range(10))
    return models, dsl


def test_ten_groups_of_ten_stay_symbolic_and_compile_fast():
    models, dsl = ten_by_ten()
    matrix({"warm": "m0x0"}, models=("m0x0",))  # warm up imports and the parser
    start = time.perf_counter()
    plan = matrix({"big": dsl, "small": "m0x0 & m1x1"}, models=models)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"10^10 set took {elapsed:.2f}s"
    assert plan.ok
    big = next(s for s in plan.sets if s.name == "big")
    assert big.symbolic and big.combinations is None and big.count == 10**10
    assert combos(plan, "small") == [["m0x0", "m1x1"]]
    d = one(plan, "LS450")
    assert d.severity.value == "info" and d.path == "matrix.sets.big"
    assert "10,000,000,000" in d.message


def test_budget_is_configurable():
    plan = matrix({"s": "(a | b) & (c | d)", "t": "e"}, models=MODELS, budget=4)
    assert combos(plan, "s") is not None
    assert combos(plan, "t") is None, "the budget is shared by all sets in solver order"
    plan = matrix({"s": "(a | b) & (c | d)"}, models=MODELS, budget=3)
    assert combos(plan, "s") is None
    assert "LS450" in codes(plan) and plan.ok


def test_a_set_referencing_a_symbolic_set_is_symbolic():
    plan = matrix({"s": "(a | b) & (c | d)", "t": "+s & e"}, models=MODELS, budget=5)
    assert combos(plan, "s") is not None and combos(plan, "t") is None


def test_budget_zero_keeps_everything_symbolic():
    plan = matrix({"s": "a", "t": "b"}, models=MODELS, budget=0)
    assert [s.combinations for s in plan.sets] == [None, None]


def test_counts_saturate_instead_of_exploding():
    sets = {"t0": "a | b"}
    for i in range(1, 80):
        sets[f"t{i}"] = f"+t{i - 1} & +t{i - 1} | +t{i - 1} & +t{i - 1}"
    start = time.perf_counter()
    plan = matrix(sets, models=MODELS)
    assert time.perf_counter() - start < 10
    last = next(s for s in plan.sets if s.name == "t79")
    # The raw count saturates; over two models there are at most 3 distinct combinations,
    # and since the budget counts distinct combinations the set expands.
    assert last.count == COUNT_CAP and combos(plan, "t79") == [["a"], ["a", "b"], ["b"]]


def test_counts_saturate_and_a_set_past_the_budget_stays_symbolic():
    sets = {"t0": " | ".join(MODELS)}
    for i in range(1, 80):
        sets[f"t{i}"] = f"+t{i - 1} & +t{i - 1} | +t{i - 1} & +t{i - 1}"
    start = time.perf_counter()
    plan = matrix(sets, models=MODELS, budget=50)
    assert time.perf_counter() - start < 10
    last = next(s for s in plan.sets if s.name == "t79")
    assert last.symbolic and last.count == COUNT_CAP
    assert last.distinct == 2 ** len(MODELS) - 1 and not last.distinct_exact


def test_count_matches_expansion_before_dedup():
    plan = matrix({"s": "(a | b | a) & (c | c)"}, models=MODELS)
    s = plan.sets[0]
    assert s.count == 6 and s.combinations == (("a", "c"), ("b", "c"))


def test_expand_sets_directly():
    plan = matrix({"s": "a | b"}, models=MODELS)
    assert plan.sets[0].combinations == (("a",), ("b",))
    # The pass works on resolved sets in solver order; count_combinations needs the table.
    assert count_combinations(plan.sets[0].expr, {}, {}) == 2
    assert expand_sets((), 10) == ()
    assert resolve_matrix  # imported for the API check below


def test_broken_sets_are_left_out_of_the_table():
    plan = matrix({"ok": "a", "bad": "a & nope", "dep": "+bad & b", "fine": "+ok & b"}, models=MODELS)
    assert [s.name for s in plan.sets] == ["ok", "fine"]


# -- the budget counts distinct combinations (expansion de-duplicates as it multiplies) -------

BASE_OVER_FOUR = "a | b | c | d | a & b | a & c | a & d | b & c | b & d | c & d"  # 10 combinations


def test_repeated_product_over_four_models_expands_to_its_distinct_combinations():
    plan = matrix({"base": BASE_OVER_FOUR, "all": " & ".join(["+base"] * 6)})
    s = next(s for s in plan.sets if s.name == "all")
    assert s.count == 10**6, "the raw count is still reported"
    assert not s.symbolic and s.distinct == 15 and len(s.combinations) == 15
    assert "LS450" not in codes(plan)
    # Every non-empty subset of four models, first occurrence first.
    assert sorted(map(tuple, combos(plan, "all"))) == sorted(
        tuple(m for m in "abcd" if mask >> "abcd".index(m) & 1) for mask in range(1, 16)
    )


def test_budget_charges_distinct_not_raw_combinations():
    plan = matrix({"s": "(a | b) & (a | b)"}, models=MODELS, budget=3)  # 4 raw, 3 distinct
    assert combos(plan, "s") == [["a"], ["a", "b"], ["b"]]
    plan = matrix({"s": "(a | b) & (a | b)", "t": "c"}, models=MODELS, budget=3)
    assert combos(plan, "t") is None, "the three distinct combinations used the whole budget"


def test_exact_distinct_count_decides_without_expanding():
    models, dsl = ten_by_ten()
    plan = matrix({"big": dsl}, models=models)
    big = plan.sets[0]
    assert big.symbolic and big.distinct == 10**10 and big.distinct_exact


def test_a_set_whose_distinct_count_is_past_the_budget_says_up_to():
    models = tuple(f"m{i}" for i in range(20))
    base = " | ".join(models)
    plan = matrix({"s": " & ".join([f"({base})"] * 3)}, models=models, budget=500)
    s = plan.sets[0]
    assert s.symbolic and s.count == 8000 and not s.distinct_exact
    d = one(plan, "LS450")
    assert "up to 8,000 distinct combinations (8,000 before de-duplication)" in d.message


def test_attempted_expansions_share_a_bounded_work_allowance():
    # Each set has many raw combinations over a few models, but overlapping parts make the
    # distinct bound inexact; the attempts draw on one allowance, so compile time stays bounded.
    models = tuple(f"m{i}" for i in range(24))
    wide = " | ".join(models)
    pairs = " | ".join(f"{a} & {b}" for a, b in zip(models, models[1:]))
    sets = {f"s{i}": f"({wide}) & ({pairs}) & ({wide}) & ({pairs})" for i in range(20)}
    start = time.perf_counter()
    plan = matrix(sets, models=models, budget=2000)
    assert time.perf_counter() - start < 5
    assert plan.ok and all(s.symbolic for s in plan.sets)
