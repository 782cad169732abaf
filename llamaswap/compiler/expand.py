"""Expand: resolved sets -> the set table (concrete combinations), within a budget.

Meaning (reference §3.2): a leaf is one one-model combination; OR concatenates its children's
families in child order; AND is their Cartesian product, left-major, each combination the
union of its parts; `+ref` inlines the referenced set's family. Every combination is
de-duplicated and sorted (code-point order, which is UTF-8 byte order); a combination that
appears twice in one set is kept once, at its first position (this never changes a decision:
the earlier copy wins every tie).

De-duplication happens as the expansion multiplies (after every OR and every product step),
so intermediate families hold distinct combinations only. Keeping the first occurrence at
every step gives exactly the order of expanding everything and de-duplicating at the end: the
first copy of a combination in the full product is always built from first copies of its parts.

The budget counts distinct combinations. There is no fixed cap. Before expanding, two numbers
are computed without expanding the set: `count`, its combinations before de-duplication, and
a bound on its distinct ones — exact when the parts of each OR and AND use disjoint models
(they add and multiply exactly) or when overlapping parts are small enough to count by
expanding just them; otherwise an upper bound (at most 2^k - 1 over k models). A set whose
exact distinct count exceeds the remaining budget stays symbolic at once. Any other set is
expanded: freely when its raw count fits (the work is bounded by that count, as before), and
otherwise within a work allowance of unions shared by the whole table (WORK_FACTOR x budget,
at least WORK_FACTOR x WORK_FLOOR), which also bounds every intermediate family, so compile
time and memory stay bounded. Its distinct combinations must fit the remaining budget. A set
that does not fit stays symbolic (`combinations is None`) and every later stage works on its
expression instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llamaswap.compiler.ast import And, Leaf, Node, Or, Ref
from llamaswap.compiler.resolve import SetDef

DEFAULT_EXPAND_BUDGET = 100_000
WORK_FACTOR = 8  # unions attempted expansions may compute, per unit of budget, table-wide
WORK_FLOOR = 10_000  # ... and per unit of at least this budget, so small budgets still expand

Combination = tuple[str, ...]


@dataclass(frozen=True)
class SetEntry:
    """One row of the set table, in solver order."""

    name: str
    dsl: str
    expr: Node
    combinations: tuple[Combination, ...] | None  # None = symbolic
    count: int  # combinations before de-duplication (exact up to COUNT_CAP, which means "at least")
    # Distinct combinations: exact when expanded; for a symbolic set an upper bound, exact when
    # `distinct_exact` (saturating at COUNT_CAP like `count`).
    distinct: int = 0
    distinct_exact: bool = True

    @property
    def symbolic(self) -> bool:
        return self.combinations is None


# Counts saturate here: references can square a count at every step (`t2: "+t1 & +t1"`),
# and an exact count with billions of digits would exhaust memory for nothing.
COUNT_CAP = 10**18


def count_combinations(expr: Node, sets: Mapping[str, SetDef], memo: dict[str, int]) -> int:
    """Number of combinations of `expr` before de-duplication, saturating at COUNT_CAP."""
    if isinstance(expr, Leaf):
        return 1
    if isinstance(expr, Ref):
        if expr.name not in memo:
            memo[expr.name] = count_combinations(sets[expr.name].expr, sets, memo)
        return memo[expr.name]
    if isinstance(expr, Or):
        return min(COUNT_CAP, sum(count_combinations(c, sets, memo) for c in expr.children))
    if isinstance(expr, And):
        total = 1
        for c in expr.children:
            total = min(COUNT_CAP, total * count_combinations(c, sets, memo))
            if total == 0:
                return 0
        return total
    raise TypeError(f"unresolved node {expr!r}")


@dataclass(frozen=True)
class _Bound:
    models: frozenset[str]
    distinct: int  # upper bound on distinct combinations, saturating at COUNT_CAP
    exact: bool


def _subsets_bound(k: int) -> int:
    return COUNT_CAP if k >= 60 else min(COUNT_CAP, (1 << k) - 1)


class _TooLarge(Exception):
    pass


class _Allowance:
    """Limits for one attempted expansion: at most `cap` distinct combinations in the result,
    and a pool of unions (`work`, None = unlimited) that also bounds every intermediate family."""

    def __init__(self, cap: int, work: int | None) -> None:
        self.cap = cap
        self.work = work

    def spend(self, n: int) -> None:
        if self.work is not None:
            self.work -= n
            if self.work < 0:
                raise _TooLarge


def _dedup(items) -> list[frozenset[str]]:
    seen: set[frozenset[str]] = set()
    out: list[frozenset[str]] = []
    for combo in items:
        if combo not in seen:
            seen.add(combo)
            out.append(combo)
    return out


def _product(parts, allowance: _Allowance) -> list[frozenset[str]]:
    """Left-major product of families (each a zero-argument callable, built on demand)."""
    acc: list[frozenset[str]] = [frozenset()]
    for make in parts:
        part = make()
        allowance.spend(len(acc) * len(part))
        acc = _dedup(a | b for a in acc for b in part)
    return acc


def _family(
    expr: Node, table: Mapping[str, tuple[frozenset[str], ...]], allowance: _Allowance
) -> list[frozenset[str]]:
    if isinstance(expr, Leaf):
        return [frozenset((expr.model,))]
    if isinstance(expr, Ref):
        if expr.name not in table:
            raise _TooLarge  # a symbolic reference
        return list(table[expr.name])
    if isinstance(expr, Or):
        fams = [_family(c, table, allowance) for c in expr.children]
        allowance.spend(sum(len(f) for f in fams))
        return _dedup(combo for f in fams for combo in f)
    if isinstance(expr, And):
        return _product([lambda c=c: _family(c, table, allowance) for c in expr.children], allowance)
    raise TypeError(f"unresolved node {expr!r}")


class _Expander:
    """State of one table's expansion: families of expanded sets, distinct bounds, raw counts
    and the shared work allowance (in unions)."""

    def __init__(self, sets: tuple[SetDef, ...], budget: int) -> None:
        self.by_name = {s.name: s for s in sets}
        self.budget = budget
        self.work = WORK_FACTOR * max(budget, WORK_FLOOR)
        self.counts: dict[str, int] = {}
        self.bounds: dict[str, _Bound] = {}
        self.families: dict[str, tuple[frozenset[str], ...]] = {}

    def attempt(self, compute, cap: int, limited: bool):
        """Run `compute(allowance)`; None when it does not fit `cap` or the work left."""
        allowance = _Allowance(cap, self.work if limited else None)
        try:
            fam = compute(allowance)
            return fam if len(fam) <= cap else None
        except _TooLarge:
            return None
        finally:
            if limited:
                self.work = max(0, allowance.work or 0)

    def bound(self, expr: Node) -> _Bound:
        """Models used by `expr` and an upper bound on its distinct combinations. Exact when
        parts over disjoint models combine, or when an overlapping part is small enough to
        count by expanding it (within the budget and the shared work allowance)."""
        if isinstance(expr, Leaf):
            return _Bound(frozenset((expr.model,)), 1, True)
        if isinstance(expr, Ref):
            if expr.name not in self.bounds:
                self.bounds[expr.name] = self.bound(self.by_name[expr.name].expr)
            return self.bounds[expr.name]
        if not isinstance(expr, (Or, And)):
            raise TypeError(f"unresolved node {expr!r}")
        parts = [self.bound(c) for c in expr.children]
        if isinstance(expr, Or):
            groups = [list(range(len(parts)))] if _overlapping(parts) else [[i] for i in range(len(parts))]
        else:
            groups = _components(parts)
        total = 0 if isinstance(expr, Or) else 1
        models: frozenset[str] = frozenset()
        exact = True
        for group in groups:
            g_models = frozenset().union(*(parts[i].models for i in group))
            models |= g_models
            if len(group) == 1:
                g = parts[group[0]]
                n, g_exact = g.distinct, g.exact
            else:
                children = [expr.children[i] for i in group]
                if isinstance(expr, Or):
                    raw = min(COUNT_CAP, sum(parts[i].distinct for i in group))
                    fam = self.attempt(
                        lambda a: _dedup(c for ch in children for c in _family(ch, self.families, a)),
                        self.budget,
                        True,
                    )
                else:
                    raw = 1
                    for i in group:
                        raw = min(COUNT_CAP, raw * parts[i].distinct)
                    fam = self.attempt(
                        lambda a: _product(
                            [lambda ch=ch: _family(ch, self.families, a) for ch in children], a
                        ),
                        self.budget,
                        True,
                    )
                if fam is not None:
                    n, g_exact = len(fam), True
                else:
                    n, g_exact = min(raw, _subsets_bound(len(g_models))), False
            exact = exact and g_exact
            total = min(COUNT_CAP, total + n if isinstance(expr, Or) else total * n)
        cap = _subsets_bound(len(models))
        if total > cap:
            return _Bound(models, cap, False)
        return _Bound(models, total, exact)

    def expand(self, s: SetDef, remaining: int) -> SetEntry:
        n = count_combinations(s.expr, self.by_name, self.counts)
        self.counts[s.name] = n
        bound = self.bound(s.expr)
        fam = None
        if all(r in self.families for r in s.refs) and (bound.distinct <= remaining or not bound.exact):
            # Within the raw count the work is bounded by the budget itself, as before
            # de-duplication; past it, the attempt draws on the shared work allowance.
            fam = self.attempt(lambda a: _family(s.expr, self.families, a), remaining, n > remaining)
        if fam is None:
            self.bounds[s.name] = bound
            return SetEntry(s.name, s.dsl, s.expr, None, n, bound.distinct, bound.exact)
        self.families[s.name] = tuple(fam)
        self.bounds[s.name] = _Bound(bound.models, len(fam), True)
        return SetEntry(s.name, s.dsl, s.expr, tuple(tuple(sorted(c)) for c in fam), n, len(fam), True)


def _overlapping(parts: list[_Bound]) -> bool:
    seen: frozenset[str] = frozenset()
    for p in parts:
        if seen & p.models:
            return True
        seen |= p.models
    return False


def _components(parts: list[_Bound]) -> list[list[int]]:
    """Indices of `parts` grouped by shared models (connected components, in first-index order)."""
    parent = list(range(len(parts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, p in enumerate(parts):
        for m in p.models:
            if m in owner:
                a, b = find(owner[m]), find(i)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[m] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(parts)):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def expand_sets(sets: tuple[SetDef, ...], budget: int = DEFAULT_EXPAND_BUDGET) -> tuple[SetEntry, ...]:
    """Expand sets (given in solver order, so references come first) into the set table."""
    expander = _Expander(sets, budget)
    remaining = budget
    out: list[SetEntry] = []
    for s in sets:
        entry = expander.expand(s, remaining)
        if entry.combinations is not None:
            remaining -= len(entry.combinations)
        out.append(entry)
    return tuple(out)
