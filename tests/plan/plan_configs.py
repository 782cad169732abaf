"""Hypothesis strategies for the plan tests: random matrix and groups configs as specs
(`support.brute_force.MatrixSpec` / `GroupSpec`) that render themselves as YAML, and random
running states.

Matrix configs: 2-6 models (names chosen to exercise byte-order sorting), optional vars
(sometimes a var key that shadows a model ID: the var wins), random evict costs 1..5 keyed by
model or var, 1-4 sets whose DSL trees mix AND, OR, leaves and `+ref`s to earlier- or
later-defined sets (acyclic: a set may only reference sets of lower random rank).
"""

from __future__ import annotations

import re

from hypothesis import assume
from hypothesis import strategies as st
from support.brute_force import GroupSpec, MatrixSpec, Tree

MODEL_POOL = ("a", "b", "c", "d", "e", "B", "Zz", "a-1", "a.2", "m_3", "ü")
VAR_POOL = ("v", "g", "q.x", "A-2", "7")
SET_POOL = ("s0", "s1", "pool", "all", "x-y", "S.9")
UNKNOWN = "not-configured"
MAX_COMBINATIONS = 300
VAR_KEY = re.compile(r"^[A-Za-z0-9.-]{1,32}$")


def tree_strategy(idents: list[str], refs: list[str], depth: int, width: int = 3) -> st.SearchStrategy[Tree]:
    atoms: list[st.SearchStrategy[Tree]] = [st.sampled_from(idents).map(lambda i: ("leaf", i))]
    if refs:
        atoms.append(st.sampled_from(refs).map(lambda r: ("ref", r)))
    base = st.one_of(*atoms)
    if depth == 0:
        return base
    sub = tree_strategy(idents, refs, depth - 1, width)
    return st.one_of(
        base,
        st.tuples(st.just("and"), st.lists(sub, min_size=2, max_size=width).map(tuple)),
        st.tuples(st.just("or"), st.lists(sub, min_size=2, max_size=width + 1).map(tuple)),
    )


@st.composite
def matrix_specs(draw, tie_heavy: bool = False, max_sets: int = 4) -> MatrixSpec:
    models = draw(st.lists(st.sampled_from(MODEL_POOL), min_size=2, max_size=6, unique=True))
    vars_: dict[str, str] = {}
    if not tie_heavy and draw(st.booleans()):
        keys = draw(
            st.lists(
                st.sampled_from(VAR_POOL + tuple(m for m in models if VAR_KEY.match(m))),
                max_size=3,
                unique=True,
            )
        )
        for k in keys:
            vars_[k] = draw(st.sampled_from(models))
    # A model whose ID is shadowed by a var key can only be named through a var.
    idents = [m for m in models if m not in vars_] + list(vars_)
    costs: dict[str, int] = {}
    if not tie_heavy:
        for m in draw(st.lists(st.sampled_from(models), max_size=len(models), unique=True)):
            keys = [k for k, v in vars_.items() if v == m] + ([m] if m not in vars_ else [])
            if keys:
                costs[draw(st.sampled_from(keys))] = draw(st.integers(1, 5))
    n_sets = draw(st.integers(1, max_sets))
    names = draw(st.lists(st.sampled_from(SET_POOL), min_size=n_sets, max_size=n_sets, unique=True))
    # Rank decides who may reference whom (acyclic); definition order is independent of it.
    rank = draw(st.permutations(range(n_sets)))
    sets: list[tuple[str, Tree]] = []
    for i, name in enumerate(names):
        refs = [names[j] for j in range(n_sets) if rank[j] < rank[i]]
        sets.append((name, draw(tree_strategy(idents, refs, depth=draw(st.integers(0, 3))))))
    spec = MatrixSpec(models, sets, vars_, costs)
    if spec.count() > MAX_COMBINATIONS:
        # Too big for the brute force: keep the shape, drop the references.
        spec = MatrixSpec(models, [(n, _strip_refs(t, idents)) for n, t in sets], vars_, costs)
    assume(spec.count() <= MAX_COMBINATIONS)
    return spec


def _strip_refs(tree: Tree, idents: list[str]) -> Tree:
    if tree[0] == "ref":
        return ("leaf", idents[0])
    if tree[0] in ("and", "or"):
        return (tree[0], tuple(_strip_refs(c, idents) for c in tree[1]))  # type: ignore[union-attr]
    return tree


@st.composite
def tie_heavy_specs(draw) -> MatrixSpec:
    """Equal costs, a shared pool referenced several times, duplicate combinations across sets
    (llama-swap's tiebreaker shape: pool = t|a|b|c, all = +pool & +pool & +pool)."""
    models = draw(st.lists(st.sampled_from(MODEL_POOL), min_size=3, max_size=5, unique=True))
    pool: Tree = ("or", tuple(("leaf", m) for m in draw(st.permutations(models))))
    k = draw(st.integers(2, 3))
    sets: list[tuple[str, Tree]] = [("all", ("and", tuple(("ref", "pool") for _ in range(k))))]
    if draw(st.booleans()):
        sets.append(("pool", pool))
    else:
        sets.insert(0, ("pool", pool))
    extra = draw(st.lists(tree_strategy(models, ["pool"], depth=2), max_size=2))
    for i, t in enumerate(extra):
        sets.append((f"s{i}", t))
    spec = MatrixSpec(models, sets)
    assume(spec.count() <= MAX_COMBINATIONS)
    return spec


@st.composite
def group_specs(draw) -> GroupSpec:
    models = draw(st.lists(st.sampled_from(MODEL_POOL), min_size=1, max_size=6, unique=True))
    n_groups = draw(st.integers(0, 3))
    free = list(models)
    groups = []
    for i in range(n_groups):
        if not free:
            break
        members = draw(st.lists(st.sampled_from(free), min_size=1, max_size=len(free), unique=True))
        free = [m for m in free if m not in members]
        groups.append(
            (f"g{i}", draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), tuple(members))
        )
    return GroupSpec(models, groups, routing=draw(st.booleans()))


def running_states(models: list[str], unknown: bool = True) -> st.SearchStrategy[tuple[str, ...]]:
    pool = list(models) + ([UNKNOWN] if unknown else [])
    return st.lists(st.sampled_from(pool), max_size=len(pool), unique=True).map(lambda xs: tuple(sorted(xs)))
