"""The transitions view agrees with `llamaswap plan --all`: one edge per decision that changes
the running state (running -> running - evict + target), keyed and labelled by the request,
labelled with its evictions; the decisions not drawn are exactly those that change nothing."""

from __future__ import annotations

import json

import pytest
from graph_cases import CASES, run_cli, run_graph

from llamaswap.compiler.render import load_node_link


def _plan_all(case) -> list[dict]:
    run = run_cli("plan", str(case.config), "--all", "--format", "json", *case.args)
    if run.code != 0:
        return []
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_transitions_agree_with_plan_all(case):
    decisions = _plan_all(case)
    run = run_graph(case, "transitions", "json")
    if not decisions:
        assert run.code == 1 and "symbolic" in run.stderr
        return
    assert run.code == 0, run.stderr
    g = load_node_link(json.loads(run.stdout))

    expected = {}
    states = set()
    no_ops = 0
    for d in decisions:
        running = tuple(d["running"])
        states.add(running)
        new = tuple(sorted(set(running) - set(d["evict"]) | {d["model"]}))
        if new == running:
            assert d["model"] in running and d["evict"] == []
            no_ops += 1
            continue
        expected[(running, new, d["model"])] = (tuple(d["evict"]), d["set"], d["cost"])

    got = {}
    for u, v, k, e in g.edges(keys=True, data=True):
        assert k == e["request"]
        got[(tuple(g.nodes[u]["models"]), tuple(g.nodes[v]["models"]), k)] = (
            tuple(e["evict"]),
            e["set"],
            e["cost"],
        )
        label = e["request"] + (f"\nevict {', '.join(e['evict'])}" if e["evict"] else "")
        assert e["label"] == label
    assert got == expected
    assert {tuple(d["models"]) for _, d in g.nodes(data=True)} == states
    assert len(expected) + no_ops == len(decisions)


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name in ("configs/matrix", "configs/groups")], ids=str
)
def test_focus_is_a_contraction_of_the_full_graph(case):
    """--focus M keeps the states holding M and contracts all the others into one node; the
    edges it draws account for every request that loads, keeps or evicts M."""
    full = load_node_link(json.loads(run_graph(case, "transitions", "json").stdout))
    models = sorted({m for _, d in full.nodes(data=True) for m in d["models"]})
    for model in models:
        run = run_graph(case, "transitions", "json", "--focus", model)
        assert run.code == 0, run.stderr
        g = load_node_link(json.loads(run.stdout))
        assert g.graph["focus"] == model
        holding = {n for n, d in full.nodes(data=True) if model in d["models"]}
        others = f"others:{model}"
        assert set(g.nodes) == holding | {others}
        loads = sum(1 for u, v in full.edges() if v in holding and u not in holding)
        unloads = sorted((u, k) for u, v, k in full.edges(keys=True) if u in holding and v not in holding)
        inside = {e for e in full.edges(keys=True) if e[0] in holding and e[1] in holding}
        assert sum(d["sources"] for _, _, d in g.out_edges(others, data=True)) == loads
        assert sorted((u, r) for u, _, d in g.in_edges(others, data=True) for r in d["requests"]) == unloads
        assert {e for e in g.edges(keys=True) if others not in e[:2]} == inside


def test_focus_accepts_an_alias():
    case = next(c for c in CASES if c.name == "configs/matrix")
    by_alias = run_graph(case, "transitions", "text", "--focus", "gemma-3")
    by_id = run_graph(case, "transitions", "text", "--focus", "gemma")
    assert by_alias.code == 0 and by_alias.stdout == by_id.stdout
    assert "focus gemma" in by_id.stdout


def test_unknown_focus_is_an_error():
    case = next(c for c in CASES if c.name == "configs/matrix")
    run = run_graph(case, "coexist", "text", "--focus", "gema")
    assert run.code == 1
    assert "unknown model 'gema' in --focus (did you mean 'gemma'?)" in run.stderr
