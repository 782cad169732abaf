"""Property tests: whatever the input, the compiler returns a plan or diagnostics and never
raises; and for valid random set expressions, expansion equals a straightforward reference
implementation written here."""

from __future__ import annotations

import json
import string
from itertools import product

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fuzz import examples

from llamaswap.compiler.ast import quote_id
from llamaswap.compiler.diagnostics import CODES, Severity
from llamaswap.compiler.parse import SyntaxProblem, parse_dsl
from llamaswap.compiler.plan import CompileOptions, Plan, compile_text

# LLAMASWAP_HYPOTHESIS_EXAMPLES=5000 runs a longer fuzzing session locally (support/fuzz.py).
FAST = settings(max_examples=examples(150))
SLOW = settings(max_examples=examples(60))

DSL_ALPHABET = st.sampled_from(list('ab_-.é模½ &|()+"\\/:@,!\t\n') + ["\u3000", "x1", "+s", "(", ")"])
dsl_noise = st.lists(DSL_ALPHABET, max_size=30).map("".join)
any_text = st.text(max_size=60)


def check_plan(plan: Plan, source: str) -> None:
    """Invariants every plan keeps, whatever the input."""
    assert isinstance(plan, Plan)
    lines = source.count("\n") + 1
    for d in plan.diagnostics:
        assert d.code in CODES, d
        assert isinstance(d.message, str) and d.message
        if d.line is not None:
            assert 1 <= d.line <= lines + 1, d
            assert d.column is None or d.column >= 1, d
    assert plan.ok == (not any(d.severity is Severity.ERROR for d in plan.diagnostics))
    json.dumps(plan.compile_json())
    for s in plan.sets:
        if s.combinations is not None:
            assert all(list(c) == sorted(set(c)) for c in s.combinations)


# -- the parser alone -----------------------------------------------------------------------


@FAST
@given(st.one_of(any_text, dsl_noise))
def test_parse_dsl_never_raises(text):
    result = parse_dsl(text)
    if isinstance(result, SyntaxProblem):
        assert result.code in CODES and result.code.startswith("LS1")
        assert 0 <= result.offset <= max(0, len(text))


# -- DSL strings inside a full config --------------------------------------------------------

HEAD = "models:\n" + "".join(f"  {m}: {{cmd: 'x --port ${{PORT}}'}}\n" for m in ("a", "b", "é")) + "matrix:\n"


@FAST
@given(st.one_of(any_text, dsl_noise), st.sampled_from(["double", "single", "plain", "block"]))
def test_any_dsl_string_in_a_config_compiles_to_a_plan(dsl, style):
    if style == "double":
        scalar = json.dumps(dsl)
    elif style == "single":
        scalar = "'" + dsl.replace("'", "''") + "'"
    elif style == "block":
        scalar = "|\n" + "".join(f"      {line}\n" for line in dsl.splitlines() or [""])
    else:
        scalar = dsl
    source = HEAD + "  vars: {x: a}\n  sets:\n    ok: a & b\n    s: " + scalar + "\n"
    check_plan(compile_text(source, "f.yaml"), source)


@FAST
@given(any_text)
def test_any_text_as_a_config_compiles_to_a_plan(text):
    check_plan(compile_text(text, "f.yaml"), text)


# -- random structured configs ------------------------------------------------------------------

ids = st.one_of(
    st.sampled_from(["a", "b", "c", "g", "org/m:q4", "é", "a_b", "x.y", "v"]),
    st.text(alphabet=string.ascii_letters + "_-./:", min_size=1, max_size=6),
)
garbage = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def dsl_trees(draw, names, refs, depth=0):
    kind = draw(st.sampled_from(["leaf", "leaf", "ref", "and", "or"] if depth < 3 else ["leaf", "ref"]))
    if kind == "leaf" or (kind == "ref" and not refs):
        return quote_id(draw(st.sampled_from(names)))
    if kind == "ref":
        return "+" + draw(st.sampled_from(refs))
    parts = draw(st.lists(dsl_trees(names, refs, depth + 1), min_size=2, max_size=3))
    op = " & " if kind == "and" else " | "
    return "(" + op.join(parts) + ")"


@st.composite
def configs(draw):
    models = draw(st.lists(ids, min_size=0, max_size=5, unique=True))
    cfg: dict = {"models": {}}
    for m in models:
        entry = {"cmd": draw(st.sampled_from(["x --port ${PORT}", "x", "", "x ${nope}", "x 'q"]))}
        if draw(st.booleans()):
            entry["aliases"] = draw(st.lists(ids, max_size=2))
        if draw(st.integers(0, 4)) == 0:
            entry[draw(st.sampled_from(["ttl", "proxy", "env", "macros", "filters", "bogus", "cmdStop"]))] = (
                draw(garbage)
            )
        cfg["models"][m] = entry
    var_keys = draw(st.lists(st.sampled_from(["x", "y", "z_", "v", "a", "L"]), max_size=3, unique=True))
    matrix: dict = {}
    if var_keys:
        matrix["vars"] = {k: draw(st.one_of(ids, garbage)) for k in var_keys}
    set_names = draw(st.lists(st.sampled_from(["s1", "s2", "s3", "s4"]), min_size=0, max_size=4, unique=True))
    names = (models or ["a"]) + var_keys + ["unknown"]
    matrix["sets"] = {
        s: draw(st.one_of(dsl_trees(names, set_names + ["missing"]), garbage, dsl_noise)) for s in set_names
    }
    if draw(st.booleans()):
        matrix["evict_costs"] = {
            k: draw(st.one_of(st.integers(-2, 100), garbage))
            for k in draw(st.lists(st.one_of(ids, st.sampled_from(var_keys or ["q"])), max_size=3))
        }
    layout = draw(st.sampled_from(["legacy", "routing", "groups", "both", "none"]))
    if layout == "legacy":
        cfg["matrix"] = matrix
    elif layout == "routing":
        cfg["routing"] = {
            "router": {
                "use": draw(st.sampled_from(["matrix", "group", "bogus"])),
                "settings": {"matrix": matrix},
            }
        }
    elif layout == "groups":
        cfg["groups"] = {"g": {"members": draw(st.lists(ids, max_size=3)), "swap": draw(garbage)}}
    elif layout == "both":
        cfg["matrix"] = matrix
        cfg["routing"] = {
            "router": {"use": "matrix"},
            "scheduler": {"settings": {"fifo": {"priority": {draw(ids): draw(garbage)}}}},
        }
    if draw(st.booleans()):
        cfg[
            draw(
                st.sampled_from(
                    ["startPort", "macros", "hooks", "apiKeys", "logLevel", "globalTTL", "nonsense"]
                )
            )
        ] = draw(garbage)
    return cfg


@SLOW
@given(configs(), st.integers(0, 50))
def test_random_configs_compile_to_a_plan(cfg, budget):
    source = yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False)
    plan = compile_text(source, "f.yaml", CompileOptions(expand_budget=budget))
    check_plan(plan, source)


# -- expansion against a reference implementation -------------------------------------------

MODELS = ["a", "b", "c", "d", "e", "org/x:1"]


@st.composite
def trees(draw, refs, depth=0):
    """(tree, dsl text) for a valid expression over MODELS, vars v1/v2 and refs."""
    kind = draw(
        st.sampled_from(["leaf", "leaf", "var", "ref", "and", "or"] if depth < 3 else ["leaf", "var"])
    )
    if kind == "ref" and refs:
        name = draw(st.sampled_from(refs))
        return ("ref", name), "+" + name
    if kind in ("leaf", "ref"):
        m = draw(st.sampled_from(MODELS))
        return ("leaf", m), quote_id(m)
    if kind == "var":
        v = draw(st.sampled_from(["v1", "v2"]))
        return ("leaf", {"v1": "a", "v2": "a"}[v]), v  # two vars naming one model
    children = draw(st.lists(trees(refs, depth + 1), min_size=2, max_size=3))
    op = " & " if kind == "and" else " | "
    return (kind, [c[0] for c in children]), "(" + op.join(c[1] for c in children) + ")"


def reference_family(tree, families):
    kind, arg = tree
    if kind == "leaf":
        return [[arg]]
    if kind == "ref":
        return families[arg]
    parts = [reference_family(c, families) for c in arg]
    if kind == "or":
        return [combo for part in parts for combo in part]
    out = [[]]
    for part in parts:
        out = [x + y for x, y in product(out, part)]
    return out


def normalise(family):
    seen, out = set(), []
    for combo in family:
        key = tuple(sorted(set(combo)))
        if key not in seen:
            seen.add(key)
            out.append(list(key))
    return out


@st.composite
def matrices(draw):
    n = draw(st.integers(1, 4))
    sets = []
    for i in range(n):
        # set i may reference sets defined after it (forward references), never itself.
        tree, dsl = draw(trees([f"s{j}" for j in range(i + 1, n)]))
        sets.append((f"s{i}", tree, dsl))
    return sets


@FAST
@given(matrices())
def test_expansion_matches_reference(sets):
    source = "models:\n" + "".join(f"  {json.dumps(m)}: {{cmd: 'x --port ${{PORT}}'}}\n" for m in MODELS)
    source += "matrix:\n  vars: {v1: a, v2: a}\n  sets:\n"
    source += "".join(f"    {name}: {json.dumps(dsl)}\n" for name, _, dsl in sets)
    plan = compile_text(source, "f.yaml")
    assert not [d for d in plan.diagnostics if d.severity is Severity.ERROR], plan.diagnostics
    families = {}
    for name, tree, _ in reversed(sets):  # dependencies (higher index) first
        families[name] = reference_family(tree, families)
    got = {s.name: [list(c) for c in s.combinations] for s in plan.sets}
    assert got == {name: normalise(families[name]) for name, _, _ in sets}
    # Solver order: depth-first in definition order, dependencies first.
    assert [s.name for s in plan.sets] == reference_order(sets)


def refs_of(tree, out):
    kind, arg = tree
    if kind == "ref" and arg not in out:
        out.append(arg)
    elif kind in ("and", "or"):
        for child in arg:
            refs_of(child, out)
    return out


def reference_order(sets):
    refs = {name: refs_of(tree, []) for name, tree, _ in sets}
    order: list[str] = []

    def visit(name):
        if name in order or name in visiting:
            return
        visiting.add(name)
        for dep in refs[name]:
            visit(dep)
        order.append(name)

    visiting: set[str] = set()
    for name, _, _ in sets:
        visit(name)
    return order


@FAST
@given(matrices(), st.integers(0, 40))
def test_budget_counts_distinct_combinations(sets, budget):
    """With any budget, an expanded set equals the reference, the budget is charged its distinct
    combinations, a set is symbolic only when its distinct count does not fit what remains, and
    the distinct bound of a symbolic set is an upper bound (exact when it says so)."""
    source = "models:\n" + "".join(f"  {json.dumps(m)}: {{cmd: 'x --port ${{PORT}}'}}\n" for m in MODELS)
    source += "matrix:\n  vars: {v1: a, v2: a}\n  sets:\n"
    source += "".join(f"    {name}: {json.dumps(dsl)}\n" for name, _, dsl in sets)
    plan = compile_text(source, "f.yaml", CompileOptions(expand_budget=budget))
    families = {}
    for name, tree, _ in reversed(sets):
        families[name] = reference_family(tree, families)
    remaining = budget
    expanded = set()
    trees_by_name = {name: tree for name, tree, _ in sets}
    for s in plan.sets:
        want = normalise(families[s.name])
        refs_expanded = all(r in expanded for r in refs_of(trees_by_name[s.name], []))
        if s.combinations is not None:
            assert [list(c) for c in s.combinations] == want and s.distinct == len(want)
            assert len(want) <= remaining
            remaining -= len(want)
            expanded.add(s.name)
        else:
            assert s.distinct >= len(want) and (not s.distinct_exact or s.distinct == len(want))
            # Small inputs never exhaust the work allowance, so only the budget (or a symbolic
            # reference) keeps a set symbolic.
            assert len(want) > remaining or not refs_expanded
