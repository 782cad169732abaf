"""What each view means, checked against brute force: coexist counts from the expression
(symbolic sets) against counts over the expansion, the group pair rule against the
enumerated states, `maximal` against a quadratic scan; plus the size limits and errors."""

from __future__ import annotations

import itertools
import subprocess
import sys

import networkx as nx
from graph_cases import CASES, run_cli, run_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fuzz import examples

from llamaswap.cli import compile_config
from llamaswap.compiler.graph import (
    DRAW_MAX_EDGES,
    DRAW_MAX_NODES,
    GraphError,
    build_graph,
    maximal,
    model_id,
    reachable_group_states,
)
from llamaswap.compiler.plan import CompileOptions, compile_text


def _case(name):
    return next(c for c in CASES if c.name == name)


def _weights(g: nx.Graph) -> dict[tuple[str, str], int]:
    return {
        tuple(sorted((g.nodes[u]["model"], g.nodes[v]["model"]))): d["weight"]
        for u, v, d in g.edges(data=True)
    }


def test_coexist_matrix_example():
    g = build_graph(compile_config(str(_case("configs/matrix").config)), "coexist")
    assert _weights(g) == {
        ("gemma", "voxtral"): 2,
        ("qwen", "voxtral"): 2,
        ("mistral", "voxtral"): 1,
        ("reranker", "voxtral"): 2,
        ("gemma", "reranker"): 1,
        ("qwen", "reranker"): 1,
        ("gemma", "sd"): 1,
        ("qwen", "sd"): 1,
    }
    assert g.edges[model_id("gemma"), model_id("voxtral")]["sets"] == ["standard", "with_rerank"]
    assert [n for n, d in g.nodes(data=True) if d["alone"]] == [model_id("llama-70B"), model_id("whisper")]
    assert g.nodes[model_id("voxtral")]["label"] == "voxtral\nevict cost 50"
    assert g.nodes[model_id("gemma")]["aliases"] == ["gemma-3"]


# -- symbolic coexist == expanded coexist ------------------------------------------------------

MODELS = ("a", "b", "c", "d", "e")


def _exprs(refs: list[str]):
    leaves = st.sampled_from(list(MODELS) + [f"+{r}" for r in refs])
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, min_size=2, max_size=3).map(lambda xs: "(" + " | ".join(xs) + ")"),
            st.lists(kids, min_size=2, max_size=3).map(lambda xs: "(" + " & ".join(xs) + ")"),
        ),
        max_leaves=7,
    )


@st.composite
def matrix_configs(draw):
    sets = []
    for i in range(draw(st.integers(1, 3))):
        sets.append((f"s{i}", draw(_exprs([n for n, _ in sets]))))
    text = "models:\n" + "".join(f"  {m}:\n    cmd: server --port ${{PORT}}\n" for m in MODELS)
    text += "matrix:\n  sets:\n" + "".join(f'    {n}: "{e}"\n' for n, e in sets)
    return text


@settings(max_examples=examples(80))
@given(matrix_configs())
def test_symbolic_coexist_counts_match_the_expansion(text):
    expanded = compile_text(text, "x.yaml", CompileOptions())
    symbolic = compile_text(text, "x.yaml", CompileOptions(expand_budget=0))
    assert expanded.ok and all(s.combinations is not None for s in expanded.sets)
    assert all(s.combinations is None for s in symbolic.sets)
    want: dict[tuple[str, str], int] = {}
    for s in expanded.sets:
        for combo in s.combinations:
            for pair in itertools.combinations(combo, 2):
                want[pair] = want.get(pair, 0) + 1
    got = _weights(build_graph(symbolic, "coexist"))
    exp = _weights(build_graph(expanded, "coexist"))
    assert exp == want
    assert got.keys() == want.keys()  # which models co-occur: always the same
    if all(s.count == len(s.combinations) for s in expanded.sets):  # no duplicate combination
        assert got == want
    else:  # the expression counts duplicates too
        assert all(got[p] >= want[p] for p in want)


def test_symbolic_sample_coexist_matches_expanded():
    case = _case("configs/symbolic")
    expanded = _weights(build_graph(compile_config(str(case.config)), "coexist"))
    symbolic = _weights(build_graph(compile_config(str(case.config), 10), "coexist"))
    assert symbolic == expanded


# -- groups: the pair rule == the enumerated states ----------------------------------------------


@st.composite
def group_configs(draw):
    models = ["m0", "m1", "m2", "m3", "m4", "m5"]
    n_groups = draw(st.integers(1, 3))
    member_of = {m: draw(st.integers(0, n_groups)) for m in models}  # n_groups = ungrouped
    text = "models:\n" + "".join(f"  {m}:\n    cmd: server --port ${{PORT}}\n" for m in models)
    text += "groups:\n"
    for gi in range(n_groups):
        members = [m for m in models if member_of[m] == gi]
        if not members:
            continue
        flags = {k: draw(st.booleans()) for k in ("swap", "exclusive", "persistent")}
        text += f"  g{gi}:\n" + "".join(f"    {k}: {str(v).lower()}\n" for k, v in flags.items())
        text += f"    members: [{', '.join(members)}]\n"
    return text


@settings(max_examples=examples(100))
@given(group_configs())
def test_group_coexist_matches_the_reachable_states(text):
    plan = compile_text(text, "g.yaml", CompileOptions())
    assert plan.ok, plan.diagnostics
    states = reachable_group_states(plan)
    want: dict[tuple[str, str], int] = {}
    for s in states:
        for pair in itertools.combinations(s, 2):
            want[pair] = want.get(pair, 0) + 1
    assert _weights(build_graph(plan, "coexist")) == want
    # sets view: the maximal reachable states
    g = build_graph(plan, "sets")
    got = {tuple(d["models"]) for _, d in g.nodes(data=True) if d["kind"] == "combination"}
    assert got == {s for s in states if s and not any(set(s) < set(t) for t in states)}


# -- maximal -------------------------------------------------------------------------------------


@given(st.lists(st.frozensets(st.sampled_from(MODELS), min_size=1), max_size=12))
def test_maximal_matches_a_quadratic_scan(combos):
    want = {c for c in combos if not any(c < d for d in combos)}
    got = maximal(combos)
    assert set(got) == want and len(got) == len(want)
    assert got == sorted(got, key=lambda c: (-len(c), sorted(c)))


def test_sets_view_with_a_symbolic_set_covers_the_expanded_one():
    """Every maximal combination of the fully expanded view is either still listed or held
    by one of the symbolic sets drawn instead."""
    case = _case("configs/symbolic")
    full = build_graph(compile_config(str(case.config)), "sets")
    part = build_graph(compile_config(str(case.config), 10), "sets")
    listed = {tuple(d["models"]) for _, d in part.nodes(data=True) if d["kind"] == "combination"}
    symbolic = {
        n: {part.nodes[m]["model"] for m in part.successors(n)}
        for n, d in part.nodes(data=True)
        if d["kind"] == "symbolic_set"
    }
    assert symbolic
    for _, d in full.nodes(data=True):
        if d["kind"] == "combination":
            combo = tuple(d["models"])
            assert combo in listed or any(set(combo) <= held for held in symbolic.values()), combo


# -- limits and errors ---------------------------------------------------------------------------


def _product(tmp_path, factors: int, width: int) -> str:
    """One set, the product of `factors` alternatives of `width` models each."""
    groups = [[f"{chr(97 + f)}{i}" for i in range(1, width + 1)] for f in range(factors)]
    text = "models:\n" + "".join(f"  {m}:\n    cmd: server --port ${{PORT}}\n" for g in groups for m in g)
    text += 'matrix:\n  sets:\n    product: "' + " & ".join("(" + " | ".join(g) + ")" for g in groups) + '"\n'
    path = tmp_path / f"product-{factors}x{width}.yaml"
    path.write_text(text)
    return str(path)


def test_too_many_states_to_draw_suggests_focus(tmp_path):
    config = _product(tmp_path, 2, 14)  # 1 + 28 + 196 = 225 running states
    for fmt in ("dot", "mermaid", "svg", "png"):
        run = run_cli("graph", config, "--view", "transitions", "--format", fmt, "-o", str(tmp_path / "out"))
        assert run.code == 1
        assert "225 reachable running states, too many to draw" in run.stderr
        assert "--focus MODEL" in run.stderr
    assert not (tmp_path / "out").exists()
    for fmt in ("text", "json"):
        assert run_cli("graph", config, "--view", "transitions", "--format", fmt).code == 0
    focused = run_cli("graph", config, "--view", "transitions", "--format", "dot", "--focus", "a1")
    assert focused.code == 0, focused.stderr
    assert (
        "16 nodes"
        in run_cli("graph", config, "--view", "transitions", "--focus", "a1").stdout.splitlines()[0]
    )
    assert "xlabel=" in focused.stdout  # 226 edges: labels placed after the layout


def test_too_many_edges_to_draw(tmp_path):
    config = _product(tmp_path, 3, 6)  # 343 states; a1's part has 50 states but 602 edges
    run = run_cli("graph", config, "--view", "transitions", "--format", "dot", "--focus", "a1")
    assert run.code == 1
    assert (
        "the transitions graph has 50 nodes and 602 edges, too many to draw "
        f"(limits: {DRAW_MAX_NODES} nodes, {DRAW_MAX_EDGES} edges)"
    ) in run.stderr


def test_symbolic_transitions_explain_what_to_do():
    run = run_graph(_case("configs/symbolic"), "transitions", "text")
    assert run.code == 1
    assert "wide, wider are symbolic" in run.stderr and "--expand-budget" in run.stderr
    try:
        build_graph(compile_config(str(_case("configs/symbolic").config), 10), "transitions")
    except GraphError as exc:
        assert "symbolic" in exc.message and "--expand-budget" in (exc.hint or "")
    else:
        raise AssertionError("expected a GraphError")


def test_config_with_errors_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text('models:\n  a:\n    cmd: x --port ${PORT}\nmatrix:\n  sets:\n    s: "a & nope"\n')
    run = run_cli("graph", str(bad), "--view", "coexist")
    assert run.code == 1 and "the config has errors" in run.stderr


def test_graph_modules_stay_pure():
    code = (
        "import sys, llamaswap.compiler.graph, llamaswap.compiler.render; "
        "print(sorted({'click', 'subprocess', 'asyncio', 'aiohttp'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_counts_saturate_like_the_set_table():
    """`t{k+1}: +t{k} & +t{k}` squares the count at every step: exact counts would have
    billions of digits; they stop at COUNT_CAP ("at least") and the view stays quick."""
    from llamaswap.compiler.expand import COUNT_CAP

    sets = {"t0": "a | b | c", **{f"t{k + 1}": f"+t{k} & +t{k} | d" for k in range(40)}}
    text = "models:\n" + "".join(f"  {m}:\n    cmd: server --port ${{PORT}}\n" for m in "abcd")
    text += "matrix:\n  sets:\n" + "".join(f'    {n}: "{e}"\n' for n, e in sets.items())
    # Over four models the chain has at most 15 distinct combinations, which expand; a small
    # budget keeps the chain symbolic, counted on its expressions.
    plan = compile_text(text, "chain.yaml", CompileOptions(expand_budget=5))
    assert plan.ok and plan.sets[-1].symbolic
    g = build_graph(plan, "coexist")
    weights = _weights(g)
    assert weights[("a", "b")] == COUNT_CAP
    assert g.edges[model_id("a"), model_id("b")]["label"] == f"at least {COUNT_CAP:,}"


# -- resources: device colours and the devices view ---------------------------------------------


def test_devices_view_bars_are_the_placement_of_each_combination():
    case = _case("samples/resources-two-gpus")
    plan = compile_config(str(case.config))
    g = build_graph(plan, "devices")
    assert g.number_of_edges() == 0
    for _, d in g.nodes(data=True):
        placement = plan.resources.placement(d["models"])
        assert d["fits"] and placement is not None
        for bar in d["bars"]:
            on = [m for m, devs in placement.items() if bar["device"] in devs]
            assert [s["model"] for s in bar["segments"]] == on
            assert sum(s["amount"] for s in bar["segments"]) == bar["used"] <= bar["budget"]
    focused = build_graph(plan, "devices", focus="llama-70b")
    assert [d["models"] for _, d in focused.nodes(data=True)] == [["embed", "llama-70b", "whisper"]]


def test_coexist_colours_models_by_their_devices():
    case = _case("samples/resources-two-gpus")
    g = build_graph(compile_config(str(case.config)), "coexist")
    legend = g.graph["legend"]
    assert list(legend) == ["gpu0", "gpu1"]
    embed, big = g.nodes[model_id("embed")], g.nodes[model_id("llama-70b")]
    assert (embed["placed"], embed["colors"]) == ("pinned", [legend["gpu1"]])
    assert (big["placed"], big["colors"]) == ("split", [legend["gpu0"], legend["gpu1"]])
    dot = run_graph(case, "coexist", "dot").stdout
    assert (
        f'"model:embed" [label="embed\\nevict cost 1\\non gpu1", shape=ellipse, fillcolor="{legend["gpu1"]}"'
        in dot
    )


def test_devices_view_without_resources_is_an_error():
    run = run_graph(_case("configs/matrix"), "devices", "text")
    assert run.code != 0
    assert "the devices view needs resources" in run.stderr
