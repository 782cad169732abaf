"""Graph: a compiled Plan as networkx graphs, one per view. Pure: no printing, no I/O.

Views (`build_graph(plan, view, focus=...)`):

- `coexist` (undirected): one node per model. Matrix engine: an edge joins two models when
  some combination holds both, weighted by how many combinations do (counted per set-table
  row; a symbolic set is counted on its expression, before de-duplication, like
  `SetEntry.count`). Group engine: an edge joins two models when some reachable running
  state holds both, weighted by how many reachable states do (no weight when the states are
  too many to list). Models without edges run alone.
- `refs` (DAG): matrix: sets, their `+ref` edges, and an edge from each set to every model
  it names directly. Groups: each group and an edge to each member.
- `sets` (DAG): the maximal combinations (contained in no other) and an edge to each model
  they hold. Matrix: combinations of expanded sets; a symbolic set cannot list its
  combinations, so it is one node (count, DSL) with an edge to each model it may hold, and
  an expanded combination that a symbolic set can hold is shown through that set. Groups:
  the maximal reachable running states.
- `devices` (resources only; no edges): one node per combination of the set table (a derived
  set is one), its placement drawn as per-device bars: `bars` lists, per device and
  resource with a budget, the budget and each model's share in the placement found for the
  combination. The renderers draw the bars (DOT: an HTML table, cell widths by share) or
  list them.
- `transitions` (directed multigraph): reachable running states, and for every precomputed
  decision that changes the state an edge `running -> running - evict + target`, keyed and
  labelled by the requested model, and labelled with the evictions. A decision that leaves
  the state as it is (the model already runs and nothing is evicted) is not drawn: it
  would be a self-loop for every model on every state. (A group decision may evict beside
  a model that already runs: that one is drawn.)

With resources, model nodes carry `devices` (the devices the model may occupy), `placed`
("split", "pinned", "any" or "none") and `colors` (each of those devices' colour), and the
graph a `legend` (device -> colour); `coexist` colours its models by device with them.

Every view holds every model (so models in no set show up standing apart), except
`transitions` and `devices`. `focus` keeps one model's part of a view (`focus_graph`).

Conventions every renderer relies on: node IDs are strings, prefixed by kind where kinds
mix (`model:`, `set:`, `group:`, `combo:`, `state:`); every node has `kind` and `label`
(lines separated by "\\n"); edges have `kind` and may have `label`; attribute values are
JSON values (lists, never tuples) so node-link JSON loads back into an equal graph; nodes
and edges are inserted in their display order (models sorted, sets in solver order, states
by size then names), which is the order every renderer prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import networkx as nx

from llamaswap.compiler.ast import And, Leaf, Node, Or, Ref
from llamaswap.compiler.decision import State
from llamaswap.compiler.expand import COUNT_CAP
from llamaswap.compiler.reachable import enumerate_states
from llamaswap.compiler.resolve import SetDef, support
from llamaswap.compiler.resources import format_size
from llamaswap.compiler.solve import SymbolicSolver

if TYPE_CHECKING:
    from llamaswap.compiler.plan import Plan

VIEWS = ("coexist", "refs", "sets", "transitions", "devices")
# Device colours (Okabe-Ito, colour-blind safe), by device order; they repeat past eight.
DEVICE_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999")
# Past these sizes a drawing (dot, mermaid, svg, png) is unreadable, and Graphviz takes
# tens of seconds to lay it out (a 50-state, 600-edge transitions graph: about 20 s).
DRAW_MAX_NODES = 200
DRAW_MAX_EDGES = 500
# An unfocused transitions picture: past this many requests (edges) its parallel edges and
# their labels make it thousands of pixels wide (matrix-example: 97 requests, 9,700 px).
DRAW_MAX_TRANSITIONS = 50
# Reachable group states enumerated for the coexist weights and the sets view.
STATE_LIMIT = 200_000


class GraphError(Exception):
    """A view that cannot be built for this plan; `hint` says what to do instead."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


# -- node IDs and labels -----------------------------------------------------------------------


def model_id(model: str) -> str:
    return f"model:{model}"


def set_id(name: str) -> str:
    return f"set:{name}"


def group_id(name: str) -> str:
    return f"group:{name}"


def combo_id(models: Iterable[str]) -> str:
    return "combo:" + json.dumps(list(models), ensure_ascii=False)


def state_id(state: Iterable[str]) -> str:
    return "state:" + json.dumps(list(state), ensure_ascii=False)


def state_label(state: Sequence[str]) -> str:
    return "[" + ", ".join(state) + "]" if state else "nothing running"


def too_large(g: nx.Graph) -> str | None:
    """Why `g` is too large to draw, or None when it can be drawn."""
    n, e = g.number_of_nodes(), g.number_of_edges()
    if g.graph.get("view") == "transitions" and g.graph.get("focus") is None and e > DRAW_MAX_TRANSITIONS:
        return (
            f"the transitions graph has {n:,} running states and {e:,} requests between them, too many "
            f"to draw in one picture (limit: {DRAW_MAX_TRANSITIONS} requests)"
        )
    if n > DRAW_MAX_NODES or e > DRAW_MAX_EDGES:
        return (
            f"the {g.graph.get('view', '')} graph has {n:,} nodes and {e:,} edges, too many to draw "
            f"(limits: {DRAW_MAX_NODES:,} nodes, {DRAW_MAX_EDGES:,} edges)"
        )
    return None


# -- entry point -------------------------------------------------------------------------------


def build_graph(
    plan: Plan, view: str, focus: str | None = None, states: Sequence[State] | None = None
) -> nx.Graph:
    """The graph of one view. `focus` is a real model ID; `states` (transitions only) are the
    reachable running states to draw, by default those of the precomputed table."""
    if not plan.ok:
        raise GraphError("the config has errors", hint=f"fix them first (llamaswap compile {plan.file})")
    if focus is not None and focus not in plan.models:
        raise GraphError(f"unknown model {focus!r}")
    if view == "coexist":
        g = coexist_graph(plan)
    elif view == "refs":
        g = refs_graph(plan)
    elif view == "sets":
        g = sets_graph(plan)
    elif view == "transitions":
        g = transitions_graph(plan, states)
    elif view == "devices":
        g = devices_graph(plan)
    else:
        raise ValueError(f"unknown view {view!r}")
    if focus is not None:
        g = focus_graph(g, focus)
    return g


def _new_graph(plan: Plan, view: str, directed: bool, notes: list[str], multi: bool = False) -> nx.Graph:
    g = (nx.MultiDiGraph() if multi else nx.DiGraph()) if directed else nx.Graph()
    name = plan.file.replace("\\", "/").rsplit("/", 1)[-1]
    g.graph.update(view=view, engine=plan.engine, config=name, notes=notes)
    if plan.resources is not None:
        g.graph["legend"] = device_colors(plan)
    return g


def device_colors(plan: Plan) -> dict[str, str]:
    """Device name -> its colour, in device order."""
    assert plan.resources is not None
    return {d.name: DEVICE_COLORS[i % len(DEVICE_COLORS)] for i, d in enumerate(plan.resources.devices)}


def _placement_attrs(plan: Plan, m: str) -> dict[str, Any]:
    """Where a model may go (resources): its devices, how, their colours, a label line."""
    res = plan.resources
    assert res is not None
    colors = device_colors(plan)
    need = res.needs.get(m)
    every = [d.name for d in res.devices]
    if need is None or not any(need.amounts.values()):
        devices, placed, line = [], "none", "needs no device"
    elif need.split:
        devices, placed = list(need.split), "split"
        line = "split " + "+".join(devices)
    elif need.devices and len(need.devices) < len(every):
        devices, placed = list(need.devices), "pinned"
        line = "on " + " or ".join(devices)
    else:
        devices, placed, line = every, "any", "any device"
    return {"devices": devices, "placed": placed, "colors": [colors[d] for d in devices], "_line": line}


def _add_models(g: nx.Graph, plan: Plan) -> None:
    group_of = {m: grp.name for grp in plan.groups for m in grp.members}
    for m in plan.models:
        attrs: dict[str, Any] = {
            "kind": "model",
            "model": m,
            "aliases": sorted(a for a, real in plan.aliases.items() if real == m),
        }
        if plan.engine == "matrix":
            attrs["evict_cost"] = plan.evict_cost(m)
            attrs["label"] = f"{m}\nevict cost {plan.evict_cost(m)}"
        else:
            attrs["group"] = group_of.get(m)
            attrs["label"] = f"{m}\ngroup {group_of.get(m)}"
        if plan.resources is not None:
            placed = _placement_attrs(plan, m)
            attrs["label"] += "\n" + placed.pop("_line")
            attrs.update(placed)
        g.add_node(model_id(m), **attrs)


# -- coexist -----------------------------------------------------------------------------------


def coexist_graph(plan: Plan) -> nx.Graph:
    sources: dict[tuple[str, str], list[str]] = {}
    pairs: Mapping[tuple[str, str], int | None]
    if plan.engine == "matrix":
        pairs, sources = matrix_pairs(plan)
        notes = ["edge weight: how many combinations hold both models"]
        if any(s.combinations is None for s in plan.sets):
            notes.append("symbolic sets are counted on their expressions, before de-duplication")
    else:
        pairs, notes = group_pairs(plan)
    g = _new_graph(plan, "coexist", directed=False, notes=notes)
    _add_models(g, plan)
    rank = {m: i for i, m in enumerate(plan.models)}
    for a, b in sorted(pairs, key=lambda p: (rank[p[0]], rank[p[1]])):
        w = pairs[(a, b)]
        attrs: dict = {"kind": "coexist", "weight": w, "label": _count_text(w) if w is not None else ""}
        if plan.engine == "matrix":
            attrs["sets"] = sources[(a, b)]
        g.add_edge(model_id(a), model_id(b), **attrs)
    for n in g.nodes:
        g.nodes[n]["alone"] = g.degree(n) == 0
    return g


def matrix_pairs(plan: Plan) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], list[str]]]:
    """(a, b) with a < b -> how many combinations hold both, and the sets they come from."""
    exprs = {s.name: s.expr for s in plan.sets}
    memo: dict[str, _Counts] = {}
    pairs: dict[tuple[str, str], int] = {}
    sources: dict[tuple[str, str], list[str]] = {}
    for s in plan.sets:
        if s.combinations is not None:
            per: dict[tuple[str, str], int] = {}
            for combo in s.combinations:
                for i, a in enumerate(combo):
                    for b in combo[i + 1 :]:
                        per[(a, b)] = per.get((a, b), 0) + 1
        else:
            per = {key: q[0] for key, q in count_pairs(s.expr, exprs, memo).pairs.items()}
        for key, n in per.items():
            if n:
                pairs[key] = _cap(pairs.get(key, 0) + n)
                sources.setdefault(key, []).append(s.name)
    return pairs, sources


class _Counts:
    """Counts over a family of combinations, all saturating at COUNT_CAP: `total`; per model
    m of the support, `held[m]` and `lacking[m]`; per pair a < b of the support, `pairs[(a, b)]`
    = (both, a without b, b without a, neither)."""

    __slots__ = ("total", "held", "lacking", "pairs")

    def __init__(
        self,
        total: int,
        held: dict[str, int],
        lacking: dict[str, int],
        pairs: dict[tuple[str, str], tuple[int, int, int, int]],
    ):
        self.total = total
        self.held = held
        self.lacking = lacking
        self.pairs = pairs

    def pair(self, a: str, b: str) -> tuple[int, int, int, int]:
        got = self.pairs.get((a, b))
        if got is not None:
            return got
        ha, hb = self.held.get(a, 0), self.held.get(b, 0)
        if ha:  # b is not in the support
            return 0, ha, 0, self.lacking[a]
        if hb:
            return 0, 0, hb, self.lacking[b]
        return 0, 0, 0, self.total


def count_pairs(expr: Node, exprs: Mapping[str, Node], memo: dict[str, _Counts]) -> _Counts:
    """How many combinations of `expr` hold each model and each pair, without expanding.

    OR adds its children's counts. AND takes one combination per child and unions them;
    folding two children x, y: x holds both, or a only and y holds b, or b only and y holds
    a, or neither and y holds both. Only sums and products of counts: so they can saturate
    at COUNT_CAP like `count_combinations` (refs can square a count at every step) and stay
    exact below it, where an inclusion-exclusion would need exact huge numbers."""
    if isinstance(expr, Leaf):
        return _Counts(1, {expr.model: 1}, {expr.model: 0}, {})
    if isinstance(expr, Ref):
        got = memo.get(expr.name)
        if got is None:
            got = memo[expr.name] = count_pairs(exprs[expr.name], exprs, memo)
        return got
    kids = [count_pairs(c, exprs, memo) for c in expr.children]  # type: ignore[union-attr]
    if isinstance(expr, Or):
        support = sorted({m for k in kids for m in k.held})
        return _Counts(
            _cap(sum(k.total for k in kids)),
            {m: _cap(sum(k.held.get(m, 0) for k in kids)) for m in support},
            {m: _cap(sum(k.lacking.get(m, k.total) for k in kids)) for m in support},
            {
                (a, b): tuple(_cap(sum(q)) for q in zip(*(k.pair(a, b) for k in kids)))  # type: ignore[misc]
                for i, a in enumerate(support)
                for b in support[i + 1 :]
            },
        )
    assert isinstance(expr, And)
    acc = kids[0]
    for y in kids[1:]:
        x = acc
        support = sorted(set(x.held) | set(y.held))
        held = {
            m: _cap(x.held.get(m, 0) * y.total + x.lacking.get(m, x.total) * y.held.get(m, 0))
            for m in support
        }
        lacking = {m: _cap(x.lacking.get(m, x.total) * y.lacking.get(m, y.total)) for m in support}
        pairs = {}
        for i, a in enumerate(support):
            for b in support[i + 1 :]:
                xb, xa, xo, xn = x.pair(a, b)  # both, a only, b only, neither
                yb, ya, yo, yn = y.pair(a, b)
                y_held_a, y_held_b = y.held.get(a, 0), y.held.get(b, 0)
                pairs[(a, b)] = (
                    _cap(xb * y.total + xa * y_held_b + xo * y_held_a + xn * yb),
                    _cap(xa * y.lacking.get(b, y.total) + xn * ya),
                    _cap(xo * y.lacking.get(a, y.total) + xn * yo),
                    _cap(xn * yn),
                )
        acc = _Counts(_cap(x.total * y.total), held, lacking, pairs)
    return acc


def _cap(n: int) -> int:
    return n if n < COUNT_CAP else COUNT_CAP


def reachable_group_states(plan: Plan) -> list[State] | None:
    """Reachable running states of a group plan (the table's, else enumerated), or None
    when there are more than STATE_LIMIT."""
    return enumerate_states(plan, STATE_LIMIT)


def group_pairs(plan: Plan) -> tuple[dict[tuple[str, str], int | None], list[str]]:
    """Pairs of models some reachable state holds, weighted by how many states hold them.

    Whether a pair can run together needs no enumeration: a state holding both was reached
    by loading one of them while the other ran and was kept, and whether a load evicts a
    running model depends only on the two models' groups. So a and b co-occur exactly when
    loading b beside a, or a beside b, keeps the other. The weights need the states."""
    policy = plan.policy
    models = plan.models
    pairs: dict[tuple[str, str], int | None] = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            if not policy.decide(b, (a,)).evict or not policy.decide(a, (b,)).evict:
                pairs[(a, b)] = None
    states = reachable_group_states(plan)
    if states is None:
        return pairs, [f"no edge weights: more than {STATE_LIMIT:,} reachable running states"]
    counts: dict[tuple[str, str], int | None] = dict.fromkeys(pairs, 0)
    for st in states:
        for i, a in enumerate(st):
            for b in st[i + 1 :]:
                counts[(a, b)] += 1  # type: ignore[operator]  # a KeyError would refute the argument above
    return counts, ["edge weight: how many reachable running states hold both models"]


# -- refs --------------------------------------------------------------------------------------


def refs_graph(plan: Plan) -> nx.DiGraph:
    if plan.engine != "matrix":
        return _groups_graph(plan, "refs")
    g = _new_graph(plan, "refs", directed=True, notes=[])
    for s in plan.sets:
        g.add_node(set_id(s.name), **_set_attrs(s))
    _add_models(g, plan)
    for s in plan.sets:
        refs: list[str] = []
        named: list[str] = []
        _direct(s.expr, refs, named)
        for r in dict.fromkeys(refs):
            g.add_edge(set_id(s.name), set_id(r), kind="ref", label="")
        for m in sorted(set(named)):
            g.add_edge(set_id(s.name), model_id(m), kind="names", label="")
    return g


def _set_attrs(s) -> dict:
    symbolic = "symbolic, " if s.combinations is None else ""
    n = s.count if s.combinations is None else len(s.combinations)
    return {
        "kind": "symbolic_set" if s.combinations is None else "set",
        "name": s.name,
        "dsl": s.dsl,
        "count": n,
        "symbolic": s.combinations is None,
        "label": f"{s.name}\n{s.dsl}\n{symbolic}{_count_text(n)} combination{'s' if n != 1 else ''}",
    }


def _count_text(n: int) -> str:
    """A count for a label; counts saturate at COUNT_CAP, which means "at least"."""
    return f"{n:,}" if n < COUNT_CAP else f"at least {n:,}"


def _direct(expr: Node, refs: list[str], named: list[str]) -> None:
    if isinstance(expr, Leaf):
        named.append(expr.model)
    elif isinstance(expr, Ref):
        refs.append(expr.name)
    elif isinstance(expr, (And, Or)):
        for c in expr.children:
            _direct(c, refs, named)


def _groups_graph(plan: Plan, view: str) -> nx.DiGraph:
    g = _new_graph(plan, view, directed=True, notes=[])
    for grp in plan.groups:
        flags = [
            f
            for f, on in (("swap", grp.swap), ("exclusive", grp.exclusive), ("persistent", grp.persistent))
            if on
        ]
        g.add_node(
            group_id(grp.name),
            kind="group",
            name=grp.name,
            swap=grp.swap,
            exclusive=grp.exclusive,
            persistent=grp.persistent,
            label=f"{grp.name}\n{', '.join(flags) or 'no swap, not exclusive'}",
        )
    _add_models(g, plan)
    for grp in plan.groups:
        for m in grp.members:
            g.add_edge(group_id(grp.name), model_id(m), kind="member", label="")
    return g


# -- sets --------------------------------------------------------------------------------------


def sets_graph(plan: Plan) -> nx.DiGraph:
    if plan.engine == "matrix":
        return _matrix_sets_graph(plan)
    states = reachable_group_states(plan)
    if states is None:
        raise GraphError(
            f"more than {STATE_LIMIT:,} reachable running states; the maximal ones cannot be listed",
            hint="use --view refs to see the groups",
        )
    g = _new_graph(plan, "sets", directed=True, notes=["combinations: the maximal reachable running states"])
    for combo in maximal([frozenset(st) for st in states if st]):
        models = sorted(combo)
        g.add_node(combo_id(models), kind="combination", models=models, sets=[], label=state_label(models))
    _add_models_and_holds(g, plan)
    return g


def _matrix_sets_graph(plan: Plan) -> nx.DiGraph:
    symbolic = [s for s in plan.sets if s.combinations is None]
    notes = []
    if symbolic:
        notes.append(
            "a symbolic set cannot list its combinations: it is one node, pointing at every model it "
            "may hold; combinations it can hold are shown through it"
        )
    g = _new_graph(plan, "sets", directed=True, notes=notes)
    where: dict[frozenset[str], list[str]] = {}
    for s in plan.sets:
        for members in s.combinations or ():
            names = where.setdefault(frozenset(members), [])
            if s.name not in names:
                names.append(s.name)
    combos = maximal(list(where))
    if symbolic:
        solver = SymbolicSolver(plan.models, [(s.name, s.dsl, s.expr) for s in plan.sets])
        sym = [cs for cs in solver.sets if cs.name in {s.name for s in symbolic}]

        def held_by_symbolic(combo: frozenset[str]) -> bool:
            mask = 0
            for m in combo:
                mask |= 1 << solver.index[m]
            memo: dict = {}
            return any(
                cs.support & mask == mask
                and any(st == mask for st, _ in solver.set_states(cs.index, mask, memo))
                for cs in sym
            )

        combos = [c for c in combos if not held_by_symbolic(c)]
    for combo in combos:
        models = sorted(combo)
        g.add_node(
            combo_id(models),
            kind="combination",
            models=models,
            sets=where[combo],
            label=f"{state_label(models)}\n{', '.join(where[combo])}",
        )
    for s in symbolic:
        g.add_node(set_id(s.name), **_set_attrs(s))
    _add_models_and_holds(g, plan)
    defs = {s.name: SetDef(s.name, s.dsl, s.expr, ()) for s in plan.sets}
    memo: dict[str, frozenset[str]] = {}
    for s in symbolic:
        for m in sorted(support(s.expr, defs, memo)):
            g.add_edge(set_id(s.name), model_id(m), kind="may_hold", label="")
    return g


def _add_models_and_holds(g: nx.DiGraph, plan: Plan) -> None:
    """The model nodes, after the combinations already in `g`, and an edge from each
    combination to each model it holds."""
    combos = [(n, d["models"]) for n, d in g.nodes(data=True) if d["kind"] == "combination"]
    _add_models(g, plan)
    for n, models in combos:
        for m in models:
            g.add_edge(n, model_id(m), kind="holds", label="")


def maximal(combos: Sequence[frozenset[str]]) -> list[frozenset[str]]:
    """The distinct combinations contained in no other, sorted by (size desc, names).

    Each model keeps a bitmask of the combinations holding it; the combinations holding all
    of c are the AND of its models' masks, so c is maximal when that AND is c alone."""
    distinct = list(dict.fromkeys(combos))
    holding: dict[str, int] = {}
    for i, c in enumerate(distinct):
        for m in c:
            holding[m] = holding.get(m, 0) | (1 << i)
    out = []
    everything = (1 << len(distinct)) - 1
    for i, c in enumerate(distinct):
        mask = everything
        for m in c:
            mask &= holding[m]
        if mask == 1 << i:
            out.append(c)
    return sorted(out, key=lambda c: (-len(c), sorted(c)))


# -- transitions -------------------------------------------------------------------------------


def transitions_graph(plan: Plan, states: Sequence[State] | None = None) -> nx.MultiDiGraph:
    """States as nodes; an edge (keyed by the requested model) for every decision whose
    new state `running - evict + target` differs from `running`. Two requests can lead to
    the same state (groups: both a and b evict x from [a, b, x]), hence a multigraph."""
    policy = plan.policy
    if states is None:
        table = policy.table
        if table is None:
            symbolic = [s.name for s in plan.sets if s.combinations is None]
            if symbolic:
                raise GraphError(
                    f"set(s) {', '.join(symbolic)} are symbolic (too large to expand), so the reachable "
                    "running states cannot be listed",
                    hint="raise --expand-budget to expand them",
                )
            raise GraphError(
                "there is no precomputed decision table (too many running states)",
                hint="pass the states to draw",
            )
        states = table.states
    g = _new_graph(
        plan,
        "transitions",
        directed=True,
        multi=True,
        notes=["requests that leave the running state as it is are not drawn"],
    )
    for st in states:
        g.add_node(state_id(st), kind="state", models=list(st), label=state_label(st))
    for st in states:
        for target in plan.models:
            d = policy.decide(target, st)
            new = tuple(sorted(set(st) - set(d.evict) | {target}))
            if new == st:
                continue
            label = target + (f"\nevict {', '.join(d.evict)}" if d.evict else "")
            if state_id(new) not in g:  # never for reachable states: they are closed under decisions
                g.add_node(state_id(new), kind="state", models=list(new), label=state_label(new))
            g.add_edge(
                state_id(st),
                state_id(new),
                key=target,
                kind="request",
                request=target,
                evict=list(d.evict),
                set=d.set,
                cost=d.cost,
                label=label,
            )
    return g


# -- devices -----------------------------------------------------------------------------------


def devices_graph(plan: Plan) -> nx.Graph:
    """Each combination of the set table with its placement as per-device bars."""
    res = plan.resources
    if res is None:
        raise GraphError(
            "the devices view needs resources, and the config declares none",
            hint="declare devices (resources: {gpu0: {vram: 24GiB}}) and each model's resources",
        )
    notes = ["bars: each device's budget per resource, and each model's share of it"]
    if any(s.combinations is None for s in plan.sets):
        notes.append("symbolic sets list no combinations, so they have no bars")
    g = _new_graph(plan, "devices", directed=False, notes=notes)
    colors = device_colors(plan)
    seen: set[str] = set()
    for s in plan.sets:
        combos = s.combinations or ()
        for i, combo in enumerate(combos):
            node = combo_id(combo)
            if node in seen:
                continue  # the same combination from an earlier set
            seen.add(node)
            placement = res.placement(combo)
            name = s.name if len(combos) == 1 else f"{s.name} #{i + 1}"
            bars = []
            lines = [f"{name}: {', '.join(combo)}"]
            for dev in res.usage(placement or {}):
                for r, use in dev["use"].items():
                    if not use["budget"]:
                        continue
                    segments = [
                        {"model": m, "amount": _share(res, m, r)} for m in dev["models"] if _share(res, m, r)
                    ]
                    bars.append(
                        {
                            "device": dev["device"],
                            "resource": r,
                            "budget": use["budget"],
                            "used": use["used"],
                            "color": colors[dev["device"]],
                            "segments": segments,
                        }
                    )
                    held = ", ".join(f"{x['model']} {format_size(x['amount'])}" for x in segments)
                    lines.append(
                        f"{dev['device']} {r} {format_size(use['used'])}/{format_size(use['budget'])}"
                        + (f": {held}" if held else "")
                    )
            g.add_node(
                node,
                kind="placement",
                set=s.name,
                models=list(combo),
                fits=placement is not None,
                bars=bars,
                label="\n".join(lines),
            )
    return g


def _share(res: Any, model: str, resource: str) -> int | float:
    """What one device carries of `model`'s need of `resource` (bytes)."""
    need = res.needs.get(model)
    if need is None:
        return 0
    amount = need.amounts.get(resource, 0)
    if need.split:
        q = Fraction(amount, len(need.split))
        return q.numerator if q.denominator == 1 else float(q)
    return amount


# -- focus -------------------------------------------------------------------------------------


def focus_graph(g: nx.Graph, model: str) -> nx.Graph:
    """One model's part of a view.

    coexist: the model, its neighbours and its edges. refs: the model and every set (or
    group) that holds it, directly or through refs, with the edges among them. sets: the
    combinations and symbolic sets that hold it, with their models. devices: the
    combinations that hold it. transitions: see `focus_transitions`."""
    view = g.graph["view"]
    if view == "transitions":
        return focus_transitions(g, model)
    mid = model_id(model)
    keep_edges: list[tuple[str, str]]
    if view == "coexist":
        keep_edges = [(mid, v) for v in g.adj[mid]]
        keep = {mid} | set(g.adj[mid])
    elif view == "refs":
        keep = {mid} | nx.ancestors(g, mid)
        keep_edges = [(u, v) for u, v in g.edges if u in keep and v in keep]
    elif view == "sets":
        heads = list(g.predecessors(mid))
        keep = set(heads) | {m for h in heads for m in g.successors(h)} | {mid}
        keep_edges = [(u, v) for u, v in g.edges if u in heads]
    elif view == "devices":
        keep = {n for n, d in g.nodes(data=True) if model in d["models"]}
        keep_edges = []
    else:
        raise ValueError(f"unknown view {view!r}")
    out = _like(g, model)
    for n, d in g.nodes(data=True):
        if n in keep:
            out.add_node(n, **d)
    wanted = set(keep_edges)
    for u, v, d in g.edges(data=True):
        if (u, v) in wanted or (not g.is_directed() and (v, u) in wanted):
            out.add_edge(u, v, **d)
    return out


def _like(g: nx.Graph, focus: str) -> nx.Graph:
    out = g.__class__()
    out.graph.update(g.graph, focus=focus)
    return out


def focus_transitions(g: nx.DiGraph, model: str) -> nx.DiGraph:
    """The transitions around one model: every state holding it, and one node standing for
    all the states without it (the others would draw the whole graph again: a request for
    the model leaves every state). Edges between states holding the model stay as they are;
    the requests that load the model from states without it become one `load` edge per
    resulting state; the requests that evict it become one `unload` edge per state, listing
    the requests."""
    out = _like(g, model)
    out.graph["notes"] = [*g.graph["notes"], f"every state without {model} is drawn as one node"]
    others = f"others:{model}"
    holding = [n for n, d in g.nodes(data=True) if model in d["models"]]
    kept = set(holding)
    for n in holding:
        out.add_node(n, **g.nodes[n])
    out.add_node(others, kind="others", models=None, label=f"{model} not running\n(any other state)")
    loads: dict[str, int] = {}
    unloads: dict[str, list[str]] = {}
    for u, v, k, d in g.edges(keys=True, data=True):
        if u in kept and v in kept:
            out.add_edge(u, v, key=k, **d)
        elif v in kept:
            loads[v] = loads.get(v, 0) + 1
        elif u in kept:
            unloads.setdefault(u, []).append(d["request"])
    for v in holding:
        if v in loads:
            out.add_edge(
                others,
                v,
                key="load",
                kind="load",
                request=model,
                sources=loads[v],
                label=f"{model}\nfrom {loads[v]:,} state{'s' if loads[v] != 1 else ''}",
            )
    for u in holding:
        if u in unloads:
            out.add_edge(
                u,
                others,
                key="unload",
                kind="unload",
                requests=unloads[u],
                label=f"{', '.join(unloads[u])}\nevict {model}",
            )
    return out
