"""Resolve: the matrix block -> linked sets (vars and model IDs resolved, refs checked,
cycles found, solver order fixed).

llama-swap's newest rules (reference §3.3, HEAD):
- vars are optional; var keys match `^[A-Za-z0-9.-]{1,32}$`; a var's value must be a real
  model ID (an alias is rejected with a hint naming the real ID);
- `evict_costs` keys are vars or model IDs, values positive integers;
- in a set, a name is a var key first, else an exact model ID; aliases are rejected; a quoted
  name is always a model ID;
- `+ref` must name a defined set; references form a networkx DiGraph and every cycle is an
  error that shows the whole cycle (`a -> b -> a`). The valid path (no cycle) orders the
  sets with the standard library's graphlib and never builds the DiGraph: networkx is a
  slow import, loaded only when graphlib reports a cycle;
- solver order: depth-first over sets in definition order, dependencies first.

Every problem becomes a located Diagnostic; resolution goes on past errors so one run finds
them all. A set with an error (or depending on one) is left out of the solver order.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llamaswap.compiler.ast import And, Leaf, Name, Node, Or, Ref, walk
from llamaswap.compiler.diagnostics import Diagnostic, Reporter
from llamaswap.compiler.source import Pos, YMap, YScalar, YSeq
from llamaswap.compiler.suggest import did_you_mean

VAR_KEY = re.compile(r"^[A-Za-z0-9.-]{1,32}$")


@dataclass(frozen=True)
class SetDef:
    """A set after resolution: its name, DSL text, resolved tree and direct references."""

    name: str
    dsl: str
    expr: Node  # resolved: Leaf / Ref / And / Or
    refs: tuple[str, ...]


@dataclass
class Matrix:
    """The resolved matrix: sets in solver order and evict costs by real model ID."""

    sets: tuple[SetDef, ...]  # solver (topological) order, only sets without errors
    evict_costs: dict[str, int]
    vars: dict[str, str]  # var key -> real model ID (valid ones)
    used_vars: set[str] = field(default_factory=set)
    referenced_sets: set[str] = field(default_factory=set)
    # Positions for lints: model/var/set name -> where it is defined.
    set_pos: dict[str, Pos] = field(default_factory=dict)
    var_pos: dict[str, Pos] = field(default_factory=dict)
    cost_pos: dict[str, Pos] = field(default_factory=dict)  # real model ID -> evict cost key position
    cost_key: dict[str, str] = field(default_factory=dict)  # real model ID -> evict cost key as written
    auto: bool = False  # `sets: auto`: the sets are derived from the resources (resources.py)


class _Resolver:
    def __init__(
        self, file: str, block: YMap, path: str, models: Mapping[str, Any], aliases: Mapping[str, str]
    ):
        self.file = file
        self.block = block
        self.path = path
        self.models = models
        self.aliases = aliases
        self.report = Reporter(file)
        self.cost_key: dict[str, str] = {}
        # Vars that are declared but invalid (already reported): using one is not a second error.
        self.bad_vars: set[str] = set()
        # Sets that parsed but failed to resolve, with their valid references.
        self.partial: dict[str, SetDef] = {}
        self.auto = False

    def unknown_hint(self, name: str, vars_: Mapping[str, str]) -> str:
        guess = did_you_mean(name, sorted(set(vars_) | set(self.models)), partial=True)
        if guess:
            return guess
        if vars_:
            return "use a var key (under 'vars') or a model ID from 'models'"
        return "use a model ID from 'models', or define a var for it under 'vars'"

    # -- vars ----------------------------------------------------------------------------
    def resolve_vars(self) -> tuple[dict[str, str], dict[str, Pos]]:
        node = self.block.get("vars")
        out: dict[str, str] = {}
        where: dict[str, Pos] = {}
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return out, where
        if not isinstance(node, YMap):
            return out, where  # the schema check (LS302) already reported it
        for k, v in node.items:
            key = str(k.value)
            kpath = f"{self.path}.vars.{key}"
            ok = True
            if not VAR_KEY.match(key):
                self.report.error(
                    "LS205",
                    f"var key {key!r} is not 1 to 32 letters, digits, '-' or '.'",
                    k.pos,
                    kpath,
                    length=max(1, len(key)),
                    hint="'_' and other characters are not allowed in var keys",
                )
                ok = False
            if (
                not isinstance(v, YScalar)
                or not isinstance(v.value, (str, int, float))
                or isinstance(v.value, bool)
            ):
                self.report.error("LS302", f"var {key!r} must name a model ID", v.pos, kpath)
                self.bad_vars.add(key)
                continue
            target = v.value if isinstance(v.value, str) else (v.raw or str(v.value))
            if target not in self.models:
                if target in self.aliases:
                    self.report.error(
                        "LS206",
                        f"var {key!r} names {target!r}, which is not a model ID",
                        v.pos,
                        kpath,
                        hint=f"{target!r} is an alias of {self.aliases[target]!r}; vars must name "
                        f"the real model ID",
                        length=max(1, len(target)),
                    )
                else:
                    self.report.error(
                        "LS206",
                        f"var {key!r} names {target!r}, which is not a model",
                        v.pos,
                        kpath,
                        hint=did_you_mean(target, sorted(self.models), partial=True)
                        or "vars must name a model under 'models'",
                        length=max(1, len(target)),
                    )
                ok = False
            if ok:
                out[key] = target
                where[key] = k.pos
            else:
                self.bad_vars.add(key)
        return out, where

    # -- evict costs ---------------------------------------------------------------------
    def resolve_costs(
        self, vars_: Mapping[str, str], used: set[str]
    ) -> tuple[dict[str, int], dict[str, Pos]]:
        node = self.block.get("evict_costs")
        out: dict[str, int] = {}
        where: dict[str, Pos] = {}
        if node is None or (isinstance(node, YScalar) and node.value is None):
            return out, where
        if not isinstance(node, YMap):
            return out, where  # the schema check (LS302) already reported it
        for k, v in node.items:
            key = str(k.value)
            kpath = f"{self.path}.evict_costs.{key}"
            value = v.value if isinstance(v, YScalar) else None
            if type(value) is not int or value <= 0:
                if not isinstance(v, YScalar):
                    shown = "a list" if isinstance(v, YSeq) else "a mapping"
                elif isinstance(value, str):
                    shown = f"the string {value!r}"
                elif value is None:
                    shown = "nothing (null)"
                elif isinstance(value, bool):
                    shown = str(value).lower()
                else:
                    shown = str(value)
                self.report.error(
                    "LS207",
                    f"the evict cost of {key!r} is {shown}, not a whole number of at least 1",
                    v.pos,
                    kpath,
                    hint="models without a cost cost 1",
                )
                value = None
            if key in vars_:
                real = vars_[key]
                used.add(key)
            elif key in self.models:
                real = key
            elif key in self.bad_vars:
                continue
            elif key in self.aliases:
                self.report.error(
                    "LS202",
                    f"evict cost for {key!r}, an alias",
                    k.pos,
                    kpath,
                    hint=f"use the real model ID {self.aliases[key]!r}",
                    length=max(1, len(key)),
                )
                continue
            else:
                self.report.error(
                    "LS208",
                    f"evict cost for {key!r}, which is not a var or a model",
                    k.pos,
                    kpath,
                    hint=self.unknown_hint(key, vars_),
                    length=max(1, len(key)),
                )
                continue
            if value is not None:
                out[real] = value
                where[real] = k.pos
                self.cost_key[real] = key
        return out, where

    # -- sets ----------------------------------------------------------------------------
    def resolve_sets(
        self, vars_: Mapping[str, str], used: set[str]
    ) -> tuple[dict[str, SetDef], dict[str, Pos], set[str], list[str]]:
        # Imported here: the parser pulls in Lark, which only matrix configs need.
        from llamaswap.compiler.parse import SyntaxProblem, parse_dsl

        node = self.block.get("sets")
        defs: dict[str, SetDef] = {}
        where: dict[str, Pos] = {}
        broken: set[str] = set()
        order: list[str] = []
        if isinstance(node, YScalar) and node.value == "auto":
            self.auto = True
            return defs, where, broken, order
        if (
            node is None
            or (isinstance(node, YScalar) and node.value is None)
            or (isinstance(node, YMap) and not node.items)
        ):
            pos = key.pos if (key := self.block.key_node("sets")) else self.block.pos
            self.report.error(
                "LS200",
                "the matrix has no sets",
                pos,
                f"{self.path}.sets",
                hint='add e.g. sets: {standard: "a & b"}',
            )
            return defs, where, broken, order
        if not isinstance(node, YMap):
            return defs, where, broken, order  # the schema check (LS302) already reported it
        names = [str(k.value) for k, _ in node.items]
        for k, v in node.items:
            name = str(k.value)
            order.append(name)
            where[name] = k.pos
            spath = f"{self.path}.sets.{name}"
            if not isinstance(v, YScalar) or v.value is None or isinstance(v.value, bool):
                self.report.error(
                    "LS209",
                    f"set {name!r} is not an expression (a string)",
                    v.pos,
                    spath,
                    hint='quote the expression, e.g. "a & b"',
                )
                broken.add(name)
                continue
            dsl = v.value if isinstance(v.value, str) else (v.raw or str(v.value))
            result = parse_dsl(dsl)
            if isinstance(result, SyntaxProblem):
                self.report.error(
                    result.code,
                    f"set {name!r}: {result.message}",
                    v.position_of(result.offset),
                    spath,
                    hint=result.hint,
                    length=result.length,
                )
                broken.add(name)
                continue
            resolved, refs, ok = self.resolve_expr(result, name, dsl, v, spath, vars_, used, names)
            if not ok:
                broken.add(name)
                # Kept for the reference graph, so a cycle through a broken set is found too.
                self.partial[name] = SetDef(name, dsl, resolved, tuple(refs))
                continue
            defs[name] = SetDef(name, dsl, resolved, tuple(refs))
        return defs, where, broken, order

    def resolve_expr(
        self,
        node: Node,
        set_name: str,
        dsl: str,
        scalar: YScalar,
        spath: str,
        vars_: Mapping[str, str],
        used: set[str],
        set_names: list[str],
    ) -> tuple[Node, list[str], bool]:
        refs: list[str] = []
        ok = True

        def go(n: Node) -> Node:
            nonlocal ok
            if isinstance(n, Name):
                pos = scalar.position_of(n.start)
                length = n.end - n.start
                if not n.quoted and n.text in vars_:
                    used.add(n.text)
                    return Leaf(vars_[n.text], n.start, n.end)
                if n.text in self.models:
                    return Leaf(n.text, n.start, n.end)
                if not n.quoted and n.text in self.bad_vars:
                    ok = False  # the var's own error says what is wrong
                    return n
                if n.text in self.aliases:
                    self.report.error(
                        "LS202",
                        f"set {set_name!r}: {n.text!r} is an alias; sets must use real model IDs",
                        pos,
                        spath,
                        hint=f"write the real model ID {self.aliases[n.text]!r} (or a var naming it)",
                        length=length,
                    )
                elif n.quoted and n.text in vars_:
                    self.report.error(
                        "LS201",
                        f"set {set_name!r}: {n.text!r} is not a model",
                        pos,
                        spath,
                        hint=f"{n.text!r} is a var: write it without quotes",
                        length=length,
                    )
                else:
                    self.report.error(
                        "LS201",
                        f"set {set_name!r}: {n.text!r} is not a var or a model",
                        pos,
                        spath,
                        hint=self.unknown_hint(n.text, vars_),
                        length=length,
                    )
                ok = False
                return n
            if isinstance(n, Ref):
                if n.name not in set_names:
                    self.report.error(
                        "LS203",
                        f"set {set_name!r}: there is no set {n.name!r} to include",
                        scalar.position_of(n.start),
                        spath,
                        hint=did_you_mean(n.name, set_names, written="+{}", partial=True)
                        or f"defined sets: {', '.join(set_names)}",
                        length=n.end - n.start,
                    )
                    ok = False
                elif n.name not in refs:
                    refs.append(n.name)
                return n
            if isinstance(n, And):
                return And(tuple(go(c) for c in n.children), n.start, n.end)
            if isinstance(n, Or):
                return Or(tuple(go(c) for c in n.children), n.start, n.end)
            return n

        out = go(node)
        return out, refs, ok


def _ref_position(
    file_block: YMap, set_name: str, ref: str, defs: Mapping[str, SetDef]
) -> tuple[Pos | None, int]:
    sets = file_block.get("sets")
    if not isinstance(sets, YMap):
        return None, 1
    scalar = sets.get(set_name)
    if not isinstance(scalar, YScalar):
        return None, 1
    for n in walk(defs[set_name].expr):
        if isinstance(n, Ref) and n.name == ref:
            return scalar.position_of(n.start), n.end - n.start
    return scalar.pos, 1


def resolve_matrix(
    file: str, block: YMap, path: str, models: Mapping[str, Any], aliases: Mapping[str, str]
) -> tuple[Matrix, list[Diagnostic]]:
    """Resolve and link the matrix block at `path` (e.g. `matrix` or
    `routing.router.settings.matrix`)."""
    r = _Resolver(file, block, path, models, aliases)
    used: set[str] = set()
    vars_, var_pos = r.resolve_vars()
    costs, cost_pos = r.resolve_costs(vars_, used)
    defs, set_pos, broken, order = r.resolve_sets(vars_, used)

    linked = {**r.partial, **defs}
    referenced: set[str] = {ref for d in linked.values() for ref in d.refs}
    if not referenced:
        # No `+ref` anywhere: no graph to build (and networkx, a slow import, stays unloaded).
        # The solver order is the definition order.
        solver = [name for name in order if name not in broken]
        matrix = _matrix(r, defs, solver, costs, vars_, used, referenced, set_pos, var_pos, cost_pos)
        return matrix, r.report.diagnostics

    # Dependencies first (graphlib, the standard library): a valid config, however many
    # `+ref`s it has, never loads networkx (a ~0.1-0.2 s import).
    deps: dict[str, tuple[str, ...]] = {name: () for name in order}
    for name, d in linked.items():
        deps[name] = tuple(dict.fromkeys(deps.get(name, ()) + d.refs))
    try:
        dependencies_first = list(graphlib.TopologicalSorter(deps).static_order())
        in_cycle: set[str] = set()
    except graphlib.CycleError:
        # A cycle: networkx finds and reports every one, whole.
        dependencies_first, in_cycle = _report_cycles(r, block, path, order, linked)

    # Sets that are broken, in a cycle or depend on either are left out of the solver order.
    bad = set(broken) | in_cycle
    defined = set(order) - in_cycle
    for name in dependencies_first:
        if name in defined and any(dep in bad for dep in deps[name]):
            bad.add(name)
    solver = []
    seen: set[str] = set()

    # Iterative, so a long chain of references cannot exhaust Python's recursion limit.
    for root in order:
        if root in seen or root in bad:
            continue
        seen.add(root)
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            name, i = stack[-1]
            refs = defs[name].refs
            if i < len(refs):
                stack[-1] = (name, i + 1)
                dep = refs[i]
                if dep not in seen and dep not in bad:
                    seen.add(dep)
                    stack.append((dep, 0))
            else:
                stack.pop()
                solver.append(name)

    matrix = _matrix(r, defs, solver, costs, vars_, used, referenced, set_pos, var_pos, cost_pos)
    return matrix, r.report.diagnostics


def _report_cycles(
    r: _Resolver, block: YMap, path: str, order: list[str], linked: Mapping[str, SetDef]
) -> tuple[list[str], set[str]]:
    """The references as a networkx DiGraph: every cycle an LS204 error showing the whole
    cycle, once per strongly connected component, at the first reference (in definition
    order) that closes it. Returns the sets outside any cycle, dependencies first, and the
    sets in one."""
    import networkx as nx  # here, not at the top: a slow import only a config with a cycle needs

    graph = nx.DiGraph()
    graph.add_nodes_from(order)
    for name, d in linked.items():
        for ref in d.refs:
            graph.add_edge(name, ref)
    in_cycle: set[str] = set()
    rank = {n: i for i, n in enumerate(order)}
    for comp in nx.strongly_connected_components(graph):
        if len(comp) == 1:
            (only,) = comp
            if not graph.has_edge(only, only):
                continue
        in_cycle |= comp
        start = min(comp, key=rank.__getitem__)
        cycle_edges = nx.find_cycle(graph.subgraph(comp), source=start)
        names = [u for u, _ in cycle_edges] + [cycle_edges[-1][1]]
        first, second = names[0], names[1]
        pos, length = _ref_position(block, first, second, linked)
        r.report.error(
            "LS204",
            f"set {first!r} includes itself: {' -> '.join(names)}",
            pos,
            f"{path}.sets.{first}",
            hint="a set cannot include itself, directly or through other sets",
            length=length,
        )
    acyclic = graph.subgraph(set(order) - in_cycle)
    return list(reversed(list(nx.topological_sort(acyclic)))), in_cycle


def _matrix(
    r: _Resolver,
    defs: Mapping[str, SetDef],
    solver: list[str],
    costs: dict[str, int],
    vars_: dict[str, str],
    used: set[str],
    referenced: set[str],
    set_pos: dict[str, Pos],
    var_pos: dict[str, Pos],
    cost_pos: dict[str, Pos],
) -> Matrix:
    return Matrix(
        sets=tuple(defs[n] for n in solver),
        evict_costs=costs,
        vars=vars_,
        used_vars=used,
        referenced_sets=referenced,
        set_pos=set_pos,
        var_pos=var_pos,
        cost_pos=cost_pos,
        cost_key=r.cost_key,
        auto=r.auto,
    )


def support(
    expr: Node, sets: Mapping[str, SetDef], memo: dict[str, frozenset[str]] | None = None
) -> frozenset[str]:
    """Every model that appears in some combination of `expr`."""
    memo = {} if memo is None else memo
    if isinstance(expr, Leaf):
        return frozenset((expr.model,))
    if isinstance(expr, Ref):
        if expr.name not in memo:
            memo[expr.name] = support(sets[expr.name].expr, sets, memo)
        return memo[expr.name]
    if isinstance(expr, (And, Or)):
        out: frozenset[str] = frozenset()
        for c in expr.children:
            out |= support(c, sets, memo)
        return out
    return frozenset()
