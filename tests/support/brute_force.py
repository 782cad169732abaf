"""Brute-force reference solvers for the eviction policies, written to be obviously right,
not fast: the oracle the compiled policies (table, symbolic solver) are checked against.

Matrix (behaviour reference §3.2 and §3.4), applied literally:
- every set is expanded naively into its list of combinations (frozensets): a leaf is one
  one-model combination, OR concatenates, AND is the left-major Cartesian product, `+ref`
  inlines the referenced set's list. No de-duplication, no pruning;
- solver order: depth-first over sets in definition order, each set's references visited in
  order of first appearance (pre-order) before the set itself (llama-swap's topologicalOrder);
- target already running -> evict nothing, target_set = running, cost 0; the set is the first
  set (solver order) with a combination holding every running model, else none;
- target in no combination -> runs alone: evict everything running, target_set = [target],
  no set, cost 0;
- otherwise every combination holding the target is a candidate; cost = sum of the evict costs
  (default 1) of the running models outside it; lowest cost wins, ties to the first candidate
  in (solver order, expansion order).

`candidates` (explain), the definition the compiled policies must keep: one entry per set that
can hold the target — that set's best combination (lowest cost, then earliest) with its cost —
ranked by (cost, solver order). Only the "cheapest combination" rule has candidates; the
"already running" and "runs alone" rules give an empty tuple.

Groups (§4), applied literally: every model not in a group joins "(default)" {swap,
exclusive, not persistent}. For target T in group TG, a running M != T in group OG is evicted
when OG == TG and TG.swap, or OG != TG and TG.exclusive and not OG.persistent. A running model
that is in no group at all (not a configured model) is evicted.

`MatrixSpec` / `GroupSpec` describe a config independently of the compiler (so the property
tests can generate one, render it as YAML, compile it, and ask both sides); `from_plan` builds
a reference from a compiled plan's resolved AST when no spec is at hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Union

from llamaswap.compiler.decision import Candidate, Decision

RULE_RUNNING = "already running"
RULE_ALONE = "in no set: runs alone"
RULE_CHEAPEST = "cheapest combination"
DEFAULT_GROUP = "(default)"

# A DSL tree: ("leaf", ident) | ("ref", set name) | ("and", (children...)) | ("or", (children...))
Tree = Union[tuple[str, str], tuple[str, tuple["Tree", ...]]]


# -- matrix --------------------------------------------------------------------------------


def render_dsl(tree: Tree) -> str:
    """DSL text for a tree; composite children are always parenthesised."""
    kind = tree[0]
    if kind == "leaf":
        return tree[1]  # type: ignore[return-value]
    if kind == "ref":
        return "+" + tree[1]  # type: ignore[operator]
    op = " & " if kind == "and" else " | "
    return op.join(render_dsl(c) if c[0] in ("leaf", "ref") else f"({render_dsl(c)})" for c in tree[1])  # type: ignore[union-attr]


def refs_of(tree: Tree) -> list[str]:
    """Referenced set names, in order of first appearance (pre-order)."""
    out: list[str] = []

    def walk(t: Tree) -> None:
        if t[0] == "ref":
            if t[1] not in out:
                out.append(t[1])  # type: ignore[arg-type]
        elif t[0] in ("and", "or"):
            for c in t[1]:  # type: ignore[union-attr]
                walk(c)

    walk(tree)
    return out


def solver_order(sets: Sequence[tuple[str, Tree]]) -> list[str]:
    trees = dict(sets)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for dep in refs_of(trees[name]):
            visit(dep)
        order.append(name)

    for name, _ in sets:
        visit(name)
    return order


def count(tree: Tree, trees: Mapping[str, Tree]) -> int:
    """Number of combinations the naive expansion produces (without expanding)."""
    kind = tree[0]
    if kind == "leaf":
        return 1
    if kind == "ref":
        return count(trees[tree[1]], trees)  # type: ignore[index]
    sizes = [count(c, trees) for c in tree[1]]  # type: ignore[union-attr]
    if kind == "or":
        return sum(sizes)
    total = 1
    for s in sizes:
        total *= s
    return total


def expand(tree: Tree, trees: Mapping[str, Tree], resolve: Mapping[str, str]) -> list[frozenset[str]]:
    """The naive expansion: a list of combinations in expansion order, duplicates kept."""
    kind = tree[0]
    if kind == "leaf":
        return [frozenset((resolve.get(tree[1], tree[1]),))]  # type: ignore[arg-type]
    if kind == "ref":
        return expand(trees[tree[1]], trees, resolve)  # type: ignore[index]
    parts = [expand(c, trees, resolve) for c in tree[1]]  # type: ignore[union-attr]
    if kind == "or":
        return [combo for part in parts for combo in part]
    return [frozenset().union(*choice) for choice in product(*parts)]


@dataclass
class MatrixSpec:
    """A matrix config: models, vars, evict costs (keys: var or model), sets as trees in
    definition order. Renders itself as llama-swap YAML."""

    models: list[str]
    sets: list[tuple[str, Tree]]
    vars: dict[str, str] = field(default_factory=dict)
    evict_costs: dict[str, int] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # model -> aliases

    def real_costs(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, cost in self.evict_costs.items():
            out[self.vars.get(key, key)] = cost
        return out

    def to_yaml(self, routing: bool = False) -> str:
        q = json.dumps
        lines = ["models:"]
        for m in self.models:
            lines.append(f"  {q(m)}:")
            lines.append(f"    cmd: {q('server --port ${PORT} --model ' + m)}")
            if self.aliases.get(m):
                lines.append(f"    aliases: [{', '.join(q(a) for a in self.aliases[m])}]")
        indent = "  "
        if routing:
            lines += ["routing:", "  router:", "    use: matrix", "    settings:", "      matrix:"]
            indent = "        "
        else:
            lines.append("matrix:")
        if self.vars:
            lines.append(f"{indent}vars:")
            lines += [f"{indent}  {q(k)}: {q(v)}" for k, v in self.vars.items()]
        if self.evict_costs:
            lines.append(f"{indent}evict_costs:")
            lines += [f"{indent}  {q(k)}: {v}" for k, v in self.evict_costs.items()]
        lines.append(f"{indent}sets:")
        lines += [f"{indent}  {q(name)}: {q(render_dsl(tree))}" for name, tree in self.sets]
        return "\n".join(lines) + "\n"

    def count(self) -> int:
        trees = dict(self.sets)
        return sum(count(t, trees) for _, t in self.sets)

    def reference(self) -> BruteMatrix:
        trees = dict(self.sets)
        order = solver_order(self.sets)
        return BruteMatrix(
            [(name, render_dsl(trees[name]), expand(trees[name], trees, self.vars)) for name in order],
            self.real_costs(),
        )


class BruteMatrix:
    """§3.4 by enumeration. `sets`: (name, dsl, combinations) in solver order."""

    engine = "matrix"
    table = None  # no precomputed decisions: every answer is computed

    def __init__(
        self, sets: Sequence[tuple[str, str, Sequence[Iterable[str]]]], evict_costs: Mapping[str, int]
    ):
        self.sets = [(name, dsl, [frozenset(c) for c in combos]) for name, dsl, combos in sets]
        self.evict_costs = dict(evict_costs)

    def cost(self, model: str) -> int:
        return self.evict_costs.get(model, 1)

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        run = tuple(sorted(set(running)))
        if target in run:
            name = dsl = None
            for n, d, combos in self.sets:
                if any(set(run) <= c for c in combos):
                    name, dsl = n, d
                    break
            return Decision(target, run, (), name, dsl, run, 0, RULE_RUNNING, () if explain else None)
        # Every candidate: (cost, position in solver order, set index, combination).
        cands: list[tuple[int, int, int, frozenset[str]]] = []
        pos = 0
        for si, (_, _, combos) in enumerate(self.sets):
            for combo in combos:
                if target in combo:
                    cost = sum(self.cost(m) for m in run if m not in combo)
                    cands.append((cost, pos, si, combo))
                pos += 1
        if not cands:
            return Decision(target, run, run, None, None, (target,), 0, RULE_ALONE, () if explain else None)
        cost, _, si, combo = min(cands, key=lambda c: (c[0], c[1]))
        name, dsl, _ = self.sets[si]
        evict = tuple(m for m in run if m not in combo)
        candidates = None
        if explain:
            per_set: dict[int, tuple[int, int, int, frozenset[str]]] = {}
            for cand in cands:
                best = per_set.get(cand[2])
                if best is None or (cand[0], cand[1]) < (best[0], best[1]):
                    per_set[cand[2]] = cand
            ranked = sorted(per_set.values(), key=lambda c: (c[0], c[2]))
            candidates = tuple(Candidate(self.sets[c[2]][0], tuple(sorted(c[3])), c[0]) for c in ranked)
        return Decision(target, run, evict, name, dsl, tuple(sorted(combo)), cost, RULE_CHEAPEST, candidates)

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict


def from_plan(plan) -> BruteMatrix | BruteGroups:
    """A reference built from a compiled plan (its resolved trees and solver order)."""
    if plan.engine != "matrix":
        return BruteGroups(
            plan.models,
            [
                (g.name, g.swap, g.exclusive, g.persistent, g.members)
                for g in plan.groups
                if g.name != DEFAULT_GROUP
            ],
        )
    from llamaswap.compiler.ast import And, Leaf, Or, Ref

    def tree(n) -> Tree:
        if isinstance(n, Leaf):
            return ("leaf", n.model)
        if isinstance(n, Ref):
            return ("ref", n.name)
        kind = "and" if isinstance(n, And) else "or"
        assert isinstance(n, (And, Or))
        return (kind, tuple(tree(c) for c in n.children))

    trees = {s.name: tree(s.expr) for s in plan.sets}
    return BruteMatrix(
        [(s.name, s.dsl, expand(trees[s.name], trees, {})) for s in plan.sets], dict(plan.evict_costs)
    )


# -- groups --------------------------------------------------------------------------------


@dataclass
class GroupSpec:
    """A groups config: models and groups (name, swap, exclusive, persistent, members)."""

    models: list[str]
    groups: list[tuple[str, bool, bool, bool, tuple[str, ...]]]
    routing: bool = False

    def to_yaml(self) -> str:
        q = json.dumps
        lines = ["models:"]
        for m in self.models:
            lines.append(f"  {q(m)}:")
            lines.append(f"    cmd: {q('server --port ${PORT} --model ' + m)}")
        if self.groups:
            if self.routing:
                lines += ["routing:", "  router:", "    use: group", "    settings:", "      groups:"]
                indent = "        "
            else:
                lines.append("groups:")
                indent = "  "
            for name, swap, exclusive, persistent, members in self.groups:
                lines.append(f"{indent}{q(name)}:")
                lines.append(f"{indent}  swap: {str(swap).lower()}")
                lines.append(f"{indent}  exclusive: {str(exclusive).lower()}")
                lines.append(f"{indent}  persistent: {str(persistent).lower()}")
                lines.append(f"{indent}  members: [{', '.join(q(m) for m in members)}]")
        return "\n".join(lines) + "\n"

    def reference(self) -> BruteGroups:
        return BruteGroups(self.models, self.groups)


class BruteGroups:
    """§4 literally, with llama-swap's (default) group for unlisted models."""

    engine = "group"
    table = None  # no precomputed decisions: every answer is computed

    def __init__(self, models: Iterable[str], groups: Sequence[tuple[str, bool, bool, bool, Sequence[str]]]):
        self.flags: dict[str, tuple[bool, bool, bool]] = {}
        self.group_of: dict[str, str] = {}
        for name, swap, exclusive, persistent, members in groups:
            self.flags[name] = (swap, exclusive, persistent)
            for m in members:
                self.group_of[m] = name
        unlisted = [m for m in models if m not in self.group_of]
        if unlisted or not groups:
            self.flags[DEFAULT_GROUP] = (True, True, False)
            for m in unlisted:
                self.group_of[m] = DEFAULT_GROUP

    def evicts(self, target: str, other: str) -> bool:
        tg = self.group_of[target]
        og = self.group_of.get(other)
        if og is None:
            return True
        t_swap, t_exclusive, _ = self.flags[tg]
        o_persistent = self.flags[og][2]
        if og == tg:
            return t_swap
        return t_exclusive and not o_persistent

    def decide(self, target: str, running: Iterable[str], explain: bool = False) -> Decision:
        run = tuple(sorted(set(running)))
        evict = tuple(m for m in run if m != target and self.evicts(target, m))
        kept = tuple(sorted((set(run) - set(evict)) | {target}))
        # The rule text is the policy's own wording; compare decisions on the other fields.
        return Decision(
            target, run, evict, self.group_of[target], None, kept, len(evict), "", () if explain else None
        )

    def evict_for(self, target: str, running: Iterable[str]) -> tuple[str, ...]:
        return self.decide(target, running).evict
