"""Render: graphs from `graph.py` as text — Graphviz DOT, Mermaid, node-link JSON, or a
terminal listing. Pure string functions.

They rely only on the conventions `graph.py` documents (string node IDs, `kind` and
`label` on nodes, optional `label` on edges, insertion order = display order), so a graph
loaded back from the JSON renders the same. Names are escaped for each format: a model ID
may hold '/', ':', quotes, backslashes or any Unicode.
"""

from __future__ import annotations

import json
from typing import Any

import networkx as nx

from llamaswap.compiler.resources import format_size

FORMATS = ("dot", "mermaid", "json", "text")
# Graphviz's dot lays an edge label out as a node of its own, which is what makes dense
# graphs slow (a 226-edge state graph: 9 s with labels, 0.5 s without). Past this many
# edges, labels become `xlabel`s, placed after the layout: less tidy, but fast.
DOT_EDGE_LABELS_MAX = 150

_DOT_SHAPES = {
    "model": "shape=ellipse",
    "set": "shape=box, style=rounded",
    "symbolic_set": 'shape=box, style="rounded,dashed"',
    "group": "shape=tab",
    "combination": "shape=box",
    "state": "shape=box, style=rounded",
    "others": 'shape=box, style="rounded,dashed"',
}
_DOT_EDGES = {"ref": "style=bold", "may_hold": "style=dashed"}
_MERMAID_SHAPES = {
    "model": ('(["', '"])'),
    "set": ('["', '"]'),
    "symbolic_set": ('{{"', '"}}'),
    "group": ('[["', '"]]'),
    "combination": ('["', '"]'),
    "state": ('("', '")'),
    "others": ('("', '")'),
}


def render(g: nx.Graph, fmt: str) -> str:
    if fmt == "dot":
        return render_dot(g)
    if fmt == "mermaid":
        return render_mermaid(g)
    if fmt == "json":
        return render_json(g)
    if fmt == "text":
        return render_text(g)
    raise ValueError(f"unknown format {fmt!r}")


def title(g: nx.Graph) -> str:
    a = g.graph
    focus = f", focus {a['focus']}" if a.get("focus") else ""
    return f"{a['view']} view of {a['config']} ({a['engine']} engine{focus})"


def _dashed(d: dict) -> bool:
    """Drawn dashed: models that run alone, symbolic sets, the "other states" of a focus."""
    return bool(d.get("alone")) or d["kind"] in ("symbolic_set", "others")


# -- DOT ---------------------------------------------------------------------------------------


def dot_quote(text: str) -> str:
    """A DOT double-quoted string. Only `\\"` is an escape in DOT itself, but labels give
    backslashes meaning (`\\n`, `\\l`, `\\N`), so a backslash is doubled (shown as one)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "") + '"'


def render_dot(g: nx.Graph) -> str:
    directed = g.is_directed()
    arrow = "->" if directed else "--"
    # dot's layered layout suits the DAGs and state graphs; an undirected graph can be dense
    # (40 models, 700 pairs), which dot takes minutes to lay out and neato a fraction of a second.
    layout = "rankdir=LR" if directed else "layout=neato, overlap=false"
    if g.graph["view"] == "devices":
        layout = "rankdir=TB"  # bars stacked, no edges to lay out
    legend = g.graph.get("legend")
    colored = bool(legend) and any(d.get("colors") for _, d in g.nodes(data=True))
    heading = title(g)
    if colored:
        names = ", ".join(f"{device} {COLOR_NAMES.get(color, color)}" for device, color in legend.items())
        heading += f"\ndevice colours: {names} (a model that may use several devices: a wedge each)"
    lines = [
        f"{'digraph' if directed else 'graph'} {dot_quote(g.graph['view'])} {{",
        f"  graph [label={dot_quote(heading)}, labelloc=t, {layout}];",
    ]
    for n, d in g.nodes(data=True):
        if d.get("bars") is not None:
            lines.append(f"  {dot_quote(n)} [label=<{_dot_bars(d)}>, shape=plain];")
            continue
        attrs = [f"label={dot_quote(d['label'])}", _DOT_SHAPES.get(d["kind"], "shape=box")]
        styles = ["dashed"] if d.get("alone") else []
        colors = d.get("colors") if colored else None
        if colors:
            # One device: filled with its colour; several: a wedge each (split or a choice).
            styles.append("filled" if len(colors) == 1 else "wedged")
            attrs.append(f"fillcolor={dot_quote(':'.join(colors))}")
        if styles:
            attrs.append(f"style={dot_quote(','.join(styles)) if len(styles) > 1 else styles[0]}")
        lines.append(f"  {dot_quote(n)} [{', '.join(attrs)}];")
    label = "label" if g.number_of_edges() <= DOT_EDGE_LABELS_MAX else "xlabel"
    for u, v, d in g.edges(data=True):
        attrs = []
        if d.get("label"):
            attrs.append(f"{label}={dot_quote(d['label'])}")
        if d.get("kind") in _DOT_EDGES:
            attrs.append(_DOT_EDGES[d["kind"]])
        tail = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {dot_quote(u)} {arrow} {dot_quote(v)}{tail};")
    lines.append("}")
    return "\n".join(lines) + "\n"


BAR_WIDTH = 240  # points for a whole budget in the devices view's bars
CHAR_WIDTH = 7  # about what one character takes in a bar cell (a name shows where it fits)
# graph.DEVICE_COLORS by name, for the legend in a drawing's title.
COLOR_NAMES = {
    "#E69F00": "orange",
    "#56B4E9": "sky blue",
    "#009E73": "green",
    "#F0E442": "yellow",
    "#0072B2": "blue",
    "#D55E00": "vermillion",
    "#CC79A7": "purple",
    "#999999": "grey",
}


def html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _dot_bars(d: dict) -> str:
    """An HTML-like label: the combination's name, then one bar per device and resource, a
    cell per model as wide as its share of the budget, and the free rest."""
    head, *_ = d["label"].split("\n")
    rows = [f'<TR><TD COLSPAN="3" ALIGN="LEFT"><B>{html_text(head)}</B></TD></TR>']
    for bar in d["bars"]:
        budget = bar["budget"] or 1
        cells = []
        used_width = 0
        for seg in bar["segments"]:
            w = max(1, round(BAR_WIDTH * seg["amount"] / budget))
            used_width += w
            name = seg["model"] if w >= CHAR_WIDTH * (len(seg["model"]) + 1) else " "
            cells.append(
                f'<TD WIDTH="{w}" BGCOLOR="{bar["color"]}" FIXEDSIZE="TRUE" HEIGHT="18" '
                f'TOOLTIP="{html_text(seg["model"])}">{html_text(name)}</TD>'
            )
        free = BAR_WIDTH - used_width
        if free > 0:
            cells.append(f'<TD WIDTH="{free}" FIXEDSIZE="TRUE" HEIGHT="18"> </TD>')
        inner = f'<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0"><TR>{"".join(cells)}</TR></TABLE>'
        label = html_text(f"{bar['device']} {bar['resource']}")
        rows.append(
            f'<TR><TD ALIGN="LEFT">{label}</TD><TD>{inner}</TD><TD ALIGN="LEFT">{_used(bar)}</TD></TR>'
        )
    return f'<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="4">{"".join(rows)}</TABLE>'


def _used(bar: dict) -> str:
    return html_text(f"{format_size(bar['used'])}/{format_size(bar['budget'])}")


# -- Mermaid -----------------------------------------------------------------------------------

_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '#"<>&`'}


def mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: special characters as entity codes (`#34;`), lines
    joined with `<br/>`."""
    lines = ["".join(_MERMAID_ESCAPES.get(c, c) for c in line) for line in text.split("\n")]
    return "<br/>".join(lines)


def render_mermaid(g: nx.Graph) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(g.nodes)}
    lines = [f"%% {title(g)}", "flowchart LR"]
    dashed: list[str] = []
    for n, d in g.nodes(data=True):
        left, right = _MERMAID_SHAPES.get(d["kind"], ('["', '"]'))
        lines.append(f"  {ids[n]}{left}{mermaid_text(d['label'])}{right}")
        if _dashed(d):
            dashed.append(ids[n])
    arrow = "-->" if g.is_directed() else "---"
    for u, v, d in g.edges(data=True):
        label = f'|"{mermaid_text(d["label"])}"|' if d.get("label") else ""
        lines.append(f"  {ids[u]} {arrow}{label} {ids[v]}")
    if dashed:
        lines.append("  classDef dashed stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(dashed)} dashed")
    legend = g.graph.get("legend") or {}
    # Models on one device take its colour (Mermaid has no wedges for several).
    by_device: dict[str, list[str]] = {}
    for n, d in g.nodes(data=True):
        if len(d.get("devices") or ()) == 1 and d["devices"][0] in legend:
            by_device.setdefault(d["devices"][0], []).append(ids[n])
    for i, (device, color) in enumerate(legend.items()):
        if device in by_device:
            lines.append(f"  classDef device{i} fill:{color}")
            lines.append(f"  class {','.join(by_device[device])} device{i}")
    return "\n".join(lines) + "\n"


# -- JSON --------------------------------------------------------------------------------------


def node_link(g: nx.Graph) -> dict[str, Any]:
    """networkx node-link data with the edge list under "edges"."""
    try:
        return nx.node_link_data(g, edges="edges")
    except TypeError:  # networkx < 3.4 names the keyword `link`
        return nx.node_link_data(g, link="edges")


def load_node_link(data: dict[str, Any]) -> nx.Graph:
    """The inverse of `node_link`."""
    try:
        return nx.node_link_graph(data, edges="edges")
    except TypeError:  # networkx < 3.4
        return nx.node_link_graph(data, link="edges")


def render_json(g: nx.Graph) -> str:
    return json.dumps(node_link(g), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# -- text --------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return text.replace("\n", " · ")


def _head(text: str) -> str:
    return text.split("\n", 1)[0]


def render_text(g: nx.Graph) -> str:
    """Every node with its edges as a small tree; nodes without any edge listed last.
    Directed graphs list each node's outgoing edges; undirected ones every neighbour."""
    lines = [f"{title(g)}: {g.number_of_nodes():,} nodes, {g.number_of_edges():,} edges"]
    lines += [f"note: {n}" for n in g.graph.get("notes", [])]
    directed = g.is_directed()
    apart: list[str] = []
    for n, d in g.nodes(data=True):
        if d.get("bars") is not None:  # the devices view: a block per combination
            head, *rest = d["label"].split("\n")
            lines += ["", head, *[f"  {line}" for line in rest]]
            continue
        out = list(g.out_edges(n, data=True)) if directed else list(g.edges(n, data=True))
        if not out:
            if g.degree(n) == 0:
                apart.append(_one_line(d["label"]))
            continue
        lines.append("")
        lines.append(_one_line(d["label"]))
        for i, (_, v, e) in enumerate(out):
            branch = "└── " if i == len(out) - 1 else "├── "
            target = ("+" if e.get("kind") == "ref" else "") + _head(g.nodes[v]["label"])
            label = _one_line(e.get("label") or "")
            if not label:
                lines.append(f"{branch}{target}")
            elif directed:
                lines.append(f"{branch}{label} → {target}")
            else:
                lines.append(f"{branch}{target} ({label})")
    if apart:
        lines.append("")
        lines.append("standing apart (no edges):")
        lines += [f"  {a}" for a in apart]
    return "\n".join(lines) + "\n"
