"""Every format is well formed: DOT renders with Graphviz, node-link JSON loads back into an
isomorphic graph, Mermaid follows the small grammar we emit, svg/png come out of the CLI,
and names that need escaping survive every format."""

from __future__ import annotations

import json
import re
import subprocess

import networkx as nx
import pytest
from graph_cases import CASES, VIEWS, Run, dot_program, run_cli, run_graph

from llamaswap.cli import compile_config
from llamaswap.compiler.graph import build_graph
from llamaswap.compiler.reachable import reachable_states
from llamaswap.compiler.render import dot_quote, load_node_link, mermaid_text, render_dot, render_json

EXPECTED_FAILURES = ("are symbolic (too large to expand)", "too many to draw")


def _ok(run: Run) -> str | None:
    """The output, or None for the failures a view may have (their text is in the goldens)."""
    if run.code != 0:
        assert run.code == 1 and any(f in run.stderr for f in EXPECTED_FAILURES), run.stderr
        return None
    return run.stdout


def _plan(case):
    budget = int(case.args[1]) if case.args[:1] == ("--expand-budget",) else None
    return compile_config(str(case.config), budget)


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_dot_renders_with_graphviz(case, view):
    dot = _ok(run_graph(case, view, "dot"))
    exe = dot_program()
    if dot is None:
        return
    proc = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b"", proc.stderr.decode()  # no syntax warnings either
    assert b"<svg" in proc.stdout


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_json_loads_back_isomorphic(case, view):
    text = _ok(run_graph(case, view, "json"))
    if text is None:
        return
    loaded = load_node_link(json.loads(text))
    plan = _plan(case)
    states = reachable_states(plan) if view == "transitions" else None
    built = build_graph(plan, view, states=states)
    assert loaded.is_directed() == built.is_directed()
    assert loaded.graph == built.graph
    assert list(loaded.nodes) == list(built.nodes)  # display order survives too
    assert nx.is_isomorphic(loaded, built, node_match=lambda a, b: a == b, edge_match=lambda a, b: a == b)
    assert render_json(loaded) == text
    assert render_dot(loaded) == render_dot(built)


MERMAID_NODE = re.compile(r'^  n\d+(\(\["|\["|\{\{"|\[\["|\(")[^"]*("\]\)|"\]|"\}\}|"\]\]|"\))$')
MERMAID_EDGE = re.compile(r'^  n\d+ (-->|---)(\|"[^"]*"\|)? n\d+$')


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_mermaid_shape(case, view):
    text = _ok(run_graph(case, view, "mermaid"))
    if text is None:
        return
    lines = text.splitlines()
    assert lines[0].startswith("%% ") and lines[1] == "flowchart LR"
    for line in lines[2:]:
        if line.startswith("  classDef ") or line.startswith("  class "):
            continue
        assert MERMAID_NODE.match(line) or MERMAID_EDGE.match(line), line


def test_escaping():
    assert dot_quote('say "hi"') == '"say \\"hi\\""'
    assert dot_quote("back\\slash") == '"back\\\\slash"'
    assert dot_quote("a\nb") == '"a\\nb"'
    assert dot_quote("模型/x:q4") == '"模型/x:q4"'
    assert mermaid_text('a "b" <c> & #d`') == "a #34;b#34; #60;c#62; #38; #35;d#96;"
    assert mermaid_text("one\ntwo") == "one<br/>two"


def test_awkward_names_round_trip_through_graphviz():
    """Model IDs with quotes, backslashes, '/', ':' and unicode are drawn as written."""
    import xml.etree.ElementTree as ET

    case = next(c for c in CASES if c.name == "configs/refs")
    dot = run_graph(case, "refs", "dot").stdout
    exe = dot_program()
    proc = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=60, check=True)
    texts = {t.text for t in ET.fromstring(proc.stdout).iter("{http://www.w3.org/2000/svg}text")}
    for name in ('say "hi"', "org/chat:q4", "模型-ü", "back\\slash"):
        assert name in texts, (name, sorted(texts))
    assert 'chat | hi | "back\\\\slash"' in texts  # the DSL as written, its escape included


@pytest.mark.parametrize("fmt,magic", [("svg", b"<svg"), ("png", b"\x89PNG\r\n\x1a\n")])
def test_svg_png(tmp_path, fmt, magic):
    dot_program()
    case = next(c for c in CASES if c.name == "configs/matrix")
    out = tmp_path / f"g.{fmt}"
    run = run_cli("graph", str(case.config), "--view", "coexist", "-o", str(out))  # format from the suffix
    assert run.code == 0, run.stderr
    data = out.read_bytes()
    assert magic in data[:400]
    run = run_cli("graph", str(case.config), "--view", "coexist", "--format", fmt)
    assert run.code == 0 and run.stdout_bytes == data


def test_missing_graphviz_names_the_package(tmp_path):
    case = next(c for c in CASES if c.name == "configs/matrix")
    run = run_cli(
        "graph", str(case.config), "--view", "coexist", "--format", "svg", env={"PATH": str(tmp_path)}
    )
    assert run.code == 1
    assert "Graphviz's `dot` program is not installed" in run.stderr
    assert "apt-get install graphviz" in run.stderr
    assert run.stdout == ""


def test_output_file_and_format_from_suffix(tmp_path):
    case = next(c for c in CASES if c.name == "configs/matrix")
    for suffix, fmt in ((".dot", "dot"), (".mmd", "mermaid"), (".json", "json"), (".txt", "text")):
        out = tmp_path / f"g{suffix}"
        run = run_cli("graph", str(case.config), "--view", "sets", "-o", str(out))
        assert run.code == 0 and run.stdout == ""
        assert out.read_text(encoding="utf-8") == run_graph(case, "sets", fmt).stdout
